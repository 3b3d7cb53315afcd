#!/usr/bin/env bash
# Real coding agents against `dsv4 serve --demo`: Claude Code (`claude -p`, Messages),
# opencode (`opencode run`, Chat Completions), Codex CLI (`codex exec`, Responses) and Pi
# (`pi -p`, Chat Completions), each configured exactly as docs/agents.md says, isolated from
# the developer's own configuration and logins (a scratch HOME), with update checks and
# telemetry off. The demo model's answers are noise; a client passes when it exits 0 with no
# protocol error and the server's /metrics shows its requests on the expected endpoint
# answered 200.
#
#   crates/server/tests/agents/run_agents.sh [path/to/dsv4]     (default: target/debug/dsv4)
#
# Env: DSV4_AGENT_CLIENTS_DIR (npm prefix, default target/agent-clients),
#      DSV4_AGENTS="claude opencode codex pi" (which to run), DSV4_AGENT_TIMEOUT (s, default 300).
# Needs node >= 18 and npm with access to the npm registry (for the first install only).
set -euo pipefail
root="$(cd "$(dirname "$0")/../../../.." && pwd)"
bin="${1:-${DSV4_BIN:-$root/target/debug/dsv4}}"
prefix="${DSV4_AGENT_CLIENTS_DIR:-$root/target/agent-clients}"
agents="${DSV4_AGENTS:-claude opencode codex pi}"
limit="${DSV4_AGENT_TIMEOUT:-300}"
model=deepseek-v4-flash
key=dsv4-agent-test-key
# The demo model never stops by itself (its text is noise), so every answer runs to its limit:
# each client is told a small output limit, and Codex, which sends none, gets a server whose
# context leaves little room after its ~9k-token prompt.
ctx=32768
codex_ctx=12288
out=64

# Pinned client versions (bump deliberately, then rerun this script).
CLAUDE_CODE=2.1.332
OPENCODE=1.18.33
CODEX=0.171.0
PI=0.73.1 # @mariozechner/pi-coding-agent: the last Pi that runs on Node 20 (1.x needs Node >= 22.19)

[ -x "$bin" ] || { echo "run_agents: no dsv4 binary at $bin (cargo build -p dsv4 first)" >&2; exit 2; }
command -v npm >/dev/null || { echo "run_agents: npm is not installed" >&2; exit 2; }

installed_version() { node -p "require('$prefix/node_modules/$1/package.json').version" 2>/dev/null || true; }
want=("@anthropic-ai/claude-code@$CLAUDE_CODE" "opencode-ai@$OPENCODE" "@openai/codex@$CODEX" "@mariozechner/pi-coding-agent@$PI")
missing=()
for spec in "${want[@]}"; do
    name="${spec%@*}"
    [ "$(installed_version "$name")" = "${spec##*@}" ] || missing+=("$spec")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "run_agents: npm install ${missing[*]} into $prefix"
    mkdir -p "$prefix"
    [ -f "$prefix/package.json" ] || echo '{"name":"dsv4-agent-clients","private":true}' >"$prefix/package.json"
    t0=$SECONDS
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "${missing[@]}"
    echo "run_agents: installed in $((SECONDS - t0)) s"
fi
nbin="$prefix/node_modules/.bin"

work="$(mktemp -d)"
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# A fresh demo server per client (it loads in well under a second), so one client's
# leftovers never slow the next; sets $base.
start_server() { # ctx
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    base="http://127.0.0.1:$port"
    "$bin" serve --demo --port "$port" --ctx "$1" --api-key "$key" >>"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health" || true)" = 200 ] && return 0
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "run_agents: dsv4 serve died" >&2; exit 1; }
        sleep 0.2
    done
    cat "$work/server.log"
    echo "run_agents: server not healthy" >&2
    exit 1
}

# Requests answered `status` on `endpoint` so far.
count() {
    curl -s -H "Authorization: Bearer $key" "$base/metrics" |
        awk -v e="$1" -v s="$2" -F'[{}]' '$1=="dsv4_requests_total" && $2 ~ "endpoint=\""e"\"" && $2 ~ "status=\""s"\"" {split($3,a," "); n+=a[1]} END {print n+0}'
}

# A scratch home: no login, no settings of the developer's, nothing shared between clients.
newhome() {
    local h="$work/home-$1"
    mkdir -p "$h/project"
    echo "$h"
}

# Patterns that mean the client did not understand our server.
protocol_errors='(APIError|invalid_request_error|Unexpected (event|token)|failed to parse|Failed to parse|deserializ|unexpected status|stream disconnected|stream error|ECONNREFUSED|status code 4[0-9][0-9]|status code 5[0-9][0-9]|\b(400|401|404|422|500)\b [A-Z])'

passed=0
failed=0
capped=
failures=()
run_client() { # name endpoint dir command...
    local name="$1" endpoint="$2" dir="$3"
    shift 3
    local before after before_err after_err rc=0 t0=$SECONDS
    before="$(count "$endpoint" 200)"
    before_err="$(($(count "$endpoint" 400) + $(count "$endpoint" 422) + $(count "$endpoint" 500) + $(count auth 401)))"
    (cd "$dir" && exec timeout --kill-after=10 "$limit" "$@") >"$work/$name.out" 2>&1 </dev/null || rc=$?
    after="$(count "$endpoint" 200)"
    after_err="$(($(count "$endpoint" 400) + $(count "$endpoint" 422) + $(count "$endpoint" 500) + $(count auth 401)))"
    local why=""
    # The demo's noise never ends by itself, so every answer runs into its output limit. Claude
    # Code and Codex report that as an error and exit 1; that exit is accepted when their own
    # words say so ($capped: what the client prints for it), as it shows they parsed our answer.
    [ "$rc" = 0 ] || { [ "$rc" = 1 ] && [ -n "$capped" ] && grep -q "$capped" "$work/$name.out"; } || why="exit status $rc"
    [ "$after" -gt "$before" ] || why="${why:+$why; }no 200 on $endpoint ($before -> $after)"
    [ "$after_err" = "$before_err" ] || why="${why:+$why; }$((after_err - before_err)) error answers on $endpoint/auth"
    if [ "$name" = claude ]; then
        # `--output-format json`: an HTTP error shows as api_error_status; the demo's noise always
        # runs into the output cap, which Claude Code reports as api_error "max_output_tokens".
        python3 - "$work/$name.out" <<'PY' || why="${why:+$why; }claude result: $(tail -c 300 "$work/$name.out")"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
r = json.loads(lines[-1])
ok = r.get("type") == "result" and r.get("api_error_status") is None and r.get("api_error") in (None, "max_output_tokens")
sys.exit(0 if ok else 1)
PY
    fi
    if grep -Eq "$protocol_errors" "$work/$name.out"; then
        why="${why:+$why; }protocol error in its output"
    fi
    if [ -z "$why" ]; then
        passed=$((passed + 1))
        echo "ok   $name: $((after - before)) request(s) on $endpoint, $((SECONDS - t0)) s"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAIL $name: $why ($((SECONDS - t0)) s); its output:"
        sed 's/^/    /' "$work/$name.out" | tail -40
    fi
}

for agent in $agents; do
    case "$agent" in
    claude)
        start_server "$ctx"
        capped='"api_error":"max_output_tokens"'
        h="$(newhome claude)"
        run_client claude messages "$h/project" env -u ANTHROPIC_API_KEY HOME="$h" \
            ANTHROPIC_BASE_URL="$base" ANTHROPIC_AUTH_TOKEN="$key" \
            ANTHROPIC_MODEL="$model" ANTHROPIC_DEFAULT_OPUS_MODEL="$model" ANTHROPIC_DEFAULT_SONNET_MODEL="$model" \
            ANTHROPIC_DEFAULT_HAIKU_MODEL="$model" CLAUDE_CODE_SUBAGENT_MODEL="$model" \
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 \
            DISABLE_ERROR_REPORTING=1 CLAUDE_CODE_ATTRIBUTION_HEADER=0 CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK=1 \
            API_TIMEOUT_MS=600000 CLAUDE_STREAM_IDLE_TIMEOUT_MS=600000 CLAUDE_CODE_AUTO_COMPACT_WINDOW="$ctx" \
            CLAUDE_CODE_MAX_OUTPUT_TOKENS="$out" \
            "$nbin/claude" -p "Say hello in one word." --max-turns 1 --output-format json
        ;;
    opencode)
        start_server "$ctx"
        capped=
        h="$(newhome opencode)"
        cat >"$h/project/opencode.json" <<EOF
{
  "\$schema": "https://opencode.ai/config.json",
  "model": "dsv4/$model",
  "small_model": "dsv4/$model",
  "autoupdate": false,
  "share": "disabled",
  "provider": {
    "dsv4": {
      "npm": "@ai-sdk/openai-compatible",
      "name": "dsv4 serve",
      "options": { "baseURL": "$base/v1", "apiKey": "{env:DSV4_API_KEY}", "timeout": 3600000, "chunkTimeout": 600000 },
      "models": {
        "$model": { "name": "DeepSeek V4 Flash (dsv4)", "reasoning": true, "tool_call": true, "limit": { "context": $ctx, "output": $out } }
      }
    }
  }
}
EOF
        run_client opencode chat_completions "$h/project" env HOME="$h" XDG_CONFIG_HOME="$h/.config" XDG_DATA_HOME="$h/.local/share" \
            XDG_CACHE_HOME="$h/.cache" XDG_STATE_HOME="$h/.local/state" DSV4_API_KEY="$key" \
            OPENCODE_DISABLE_AUTOUPDATE=1 OPENCODE_DISABLE_MODELS_FETCH=1 OPENCODE_DISABLE_SHARE=1 \
            OPENCODE_DISABLE_LSP_DOWNLOAD=1 OPENCODE_DISABLE_DEFAULT_PLUGINS=1 OPENCODE_DISABLE_CLAUDE_CODE=1 \
            "$nbin/opencode" run -m "dsv4/$model" "Say hello in one word."
        ;;
    codex)
        start_server "$codex_ctx"
        capped='Incomplete response returned, reason: max_output_tokens'
        h="$(newhome codex)"
        mkdir -p "$h/.codex"
        cat >"$h/.codex/config.toml" <<EOF
model = "$model"
model_provider = "dsv4"
model_context_window = $codex_ctx
model_auto_compact_token_limit = $((codex_ctx * 7 / 8))
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.dsv4]
name = "dsv4 serve"
base_url = "$base/v1"
wire_api = "responses"
env_key = "DSV4_API_KEY"
stream_idle_timeout_ms = 1000000
request_max_retries = 0
stream_max_retries = 0
EOF
        run_client codex responses "$h/project" env -u OPENAI_API_KEY -u OPENAI_BASE_URL HOME="$h" CODEX_HOME="$h/.codex" DSV4_API_KEY="$key" \
            "$nbin/codex" exec --skip-git-repo-check --ephemeral "Say hello in one word."
        ;;
    pi)
        start_server "$ctx"
        capped=
        h="$(newhome pi)"
        mkdir -p "$h/.pi/agent"
        cat >"$h/.pi/agent/models.json" <<EOF
{
  "providers": {
    "dsv4": {
      "baseUrl": "$base/v1",
      "api": "openai-completions",
      "apiKey": "DSV4_API_KEY",
      "compat": {
        "supportsStore": false,
        "supportsDeveloperRole": false,
        "supportsReasoningEffort": true,
        "supportsUsageInStreaming": true,
        "maxTokensField": "max_tokens",
        "thinkingFormat": "deepseek",
        "requiresReasoningContentOnAssistantMessages": true
      },
      "models": [
        { "id": "$model", "name": "DeepSeek V4 Flash (dsv4)", "reasoning": true, "contextWindow": $ctx, "maxTokens": $out }
      ]
    }
  }
}
EOF
        run_client pi chat_completions "$h/project" env HOME="$h" PI_CODING_AGENT_DIR="$h/.pi/agent" DSV4_API_KEY="$key" \
            PI_OFFLINE=1 PI_SKIP_VERSION_CHECK=1 PI_TELEMETRY=0 \
            "$nbin/pi" --provider dsv4 --model "$model" -p "Say hello in one word."
        ;;
    *)
        echo "run_agents: unknown agent $agent" >&2
        exit 2
        ;;
    esac
done
# (Not the "N passed, N failed" shape: scripts/test runs this after nextest, whose summary
# should stay the suite's closing count.)
echo "agent clients: $passed ok, $failed failed${failures:+ (${failures[*]})}"
[ "$failed" = 0 ]
