#!/usr/bin/env bash
# Here (a machine with network access, no GPU needed): gathers the two peer engines' sources
# into one folder that travels to the GPU machine, where build-peers.sh builds them. Nothing
# of this is committed: the folder is meant to be an ignored one (target/gpu-peers).
#
#   bench/gpu/prepare-peers.sh DS4_GIT_DIR [OUT_DIR]
#
# DS4_GIT_DIR: a git directory of antirez/ds4 (a clone's .git, or a bare mirror).
# OUT_DIR (default target/gpu-peers) receives:
#   ds4.tar.gz        ds4's sources at HEAD, only what `make ds4-bench` compiles (+ LICENSE)
#   ds4.commit        the commit they come from
#   llama.cpp.tar.gz  the llama.cpp copy vendored in PyPI's llama-cpp-python 0.3.36 sdist (it
#                     has the deepseek4 architecture), trimmed to what a CUDA build of
#                     llama-bench configures and compiles (no docs, models, tests, examples,
#                     server/web UI, or other GPU backends): ~4 MB instead of ~75 MB
#   llama.cpp.source  the sdist's name and SHA-256
#   promessi_sposi.txt the benchmark text (../shared/bench), since ../shared does not travel
#
# The carry limit to the GPU machine is 64 MiB for the repository plus everything carried, so
# the sources travel compressed.
set -euo pipefail
ds4_git=${1:?usage: prepare-peers.sh DS4_GIT_DIR [OUT_DIR]}
cd "$(dirname "$0")/../.."
out=${2:-target/gpu-peers}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ds4: the files the Makefile's CUDA targets compile, nothing else (its metal/, tests/, tools
# and model cards are not needed to build ds4-bench).
git --git-dir="$ds4_git" archive --prefix=ds4/ HEAD \
    Makefile LICENSE ds4.c ds4.h ds4_gpu.h ds4_cuda.cu ds4_iq2_tables_cuda.inc ds4_bench.c \
    ds4_cli.c linenoise.c linenoise.h ds4_server.c ds4_kvstore.c ds4_kvstore.h rax.c rax.h \
    rax_malloc.h ds4_eval.c ds4_agent.c | gzip -9 >"$out/ds4.tar.gz"
git --git-dir="$ds4_git" rev-parse HEAD >"$out/ds4.commit"

# llama.cpp: only the sdist itself is built from source (--no-binary for that one package);
# its build backend comes as wheels, which is all pip needs to read the sdist's metadata.
python3 -m pip download -q --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$work/sdist"
sdist=$(ls "$work"/sdist/llama_cpp_python-0.3.36.tar.gz)
(cd "$work/sdist" && sha256sum "$(basename "$sdist")") >"$out/llama.cpp.source"
tar xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
# What CMake still configures with tests/examples/server/app off must stay: tools/ (every
# tool's CMakeLists is read), vendor/ (mtmd links miniaudio/stb), common/, scripts/, cmake/.
rm -rf "$src"/{.git,.github,.devops,.gemini,.pi,docs,models,media,tests,examples,benches,pocs,app} \
       "$src"/{gguf-py,conversion,skills,ci,licenses,grammars,requirements,requirements.txt} \
       "$src"/convert_*.py "$src"/tools/{ui,server,cli}
for b in blas cann et hexagon hip metal musa opencl openvino rpc sycl virtgpu vulkan webgpu zdnn zendnn; do
    rm -rf "$src/ggml/src/ggml-$b"
done
tar cf - -C "$(dirname "$src")" llama.cpp | gzip -9 >"$out/llama.cpp.tar.gz"

cp ../shared/bench/promessi_sposi.txt "$out/"
ls -l "$out"
