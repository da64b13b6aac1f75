#!/usr/bin/env bash
# The README's test command runs this (after scripts/setup.sh). Root is required: the end-to-end
# tests create network namespaces, links and BPF state, and remove them again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "tests need root (network namespaces, netlink)"; exit 1; fi
# the end-to-end tests run the built agent and BPF objects (dist/), as an operator would
make -s -C bpf
npx tsc -p tsconfig.json
# the tests and benchmarks are type-checked too (tsx runs them without checking)
npx tsc -p tsconfig.test.json
# lint (typescript-eslint, type-checked rules) and format (Prettier) of everything above
npm run --silent lint
mapfile -t files < <(find test -name '*.test.ts' | sort)
# one file at a time: the end-to-end files each build a whole lab of namespaces
# --test-force-exit: a handle leaked by a test process (an etcd client retry timer, say) must never hang CI
exec node --import tsx --test --test-concurrency=1 --test-force-exit --test-timeout=600000 "${files[@]}"
