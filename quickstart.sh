#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# quickstart.sh: build remora and run it in front of a demo app (run), or build it and run the
# whole test suite (test). Works on a fresh Debian 12 machine as root; idempotent: installs
# only the Debian packages that are missing.
#
# The stages of `test`, each counted in the last line "N passed, N failed[, N skipped]" (wall
# times measured on 2 cores shared with other jobs, 2026-12-03):
#   unit tests      the cmocka binaries of the normal build (--enable-werror, jemalloc): each test
#   valgrind        make check-valgrind: memcheck over each unit binary; any error or definite or
#                   indirect leak fails it; one check per binary (45-100 s)
#   clang-tidy      make tidy over proxy/ (.clang-tidy, warnings are errors); one check (3-4.5 min)
#   cppcheck        make cppcheck over proxy/ and tests/unit (.cppcheck-suppressions); one check
#                   (15-60 s)
#   layers, static  make check-layers; make static (the static binary's link and size gates)
#   integration     pytest tests/integration against the normal build (about 8 min)
#   ASan+UBSan      build-asan/ (--enable-asan --enable-ubsan, libc malloc; build under 1 min): the
#                   unit tests and the whole integration suite again with detect_leaks=1; a
#                   sanitizer report in any test fails that test (tests/integration/README.md,
#                   "Sanitizer run"; 9 min, up to 18 min under the others' load)
#   fuzz            every libFuzzer target for FUZZ_SECONDS (build-fuzz/, clang)
#   k8s, image, pod the manifests, the image and the pod tests
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

BUILD_DEPS=(build-essential autoconf automake libtool pkg-config libevent-dev libnghttp2-dev
    libc-ares-dev libssl-dev libjemalloc-dev libyaml-dev node-llhttp)
RUN_DEPS=(python3 curl)
# The shipped binary, its image and the pod test (tests/image, tests/pod).
DEPLOY_DEPS=(umoci skopeo podman buildah runc conmon catatonit python3-yaml binutils)
TEST_DEPS=(libcmocka-dev python3-pytest python3-h2 python3-websockets python3-grpcio dnsmasq-base python3-prometheus-client prometheus wrk nghttp2-client nghttp2-server clang sslscan openssl
    valgrind clang-tidy cppcheck)

log() { printf '\033[1mquickstart:\033[0m %s\n' "$*" >&2; }

install_deps() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
    local want="$1"   # configure flags
    if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
        log "autoreconf"
        autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
    fi
    if [ ! -f Makefile ] || [ "$(cat .quickstart-flags 2>/dev/null)" != "$want" ]; then
        log "configure $want"
        # shellcheck disable=SC2086
        ./configure $want >/dev/null
        echo "$want" > .quickstart-flags
    fi
    log "make"
    make -j"$(nproc)" >/dev/null
}

cmd_run() {
    install_deps "${BUILD_DEPS[@]}" "${RUN_DEPS[@]}"
    build ""
    # Not local: the EXIT trap runs after this function has returned.
    app_pid="" rem_pid=""
    /usr/bin/python3 tests/integration/upstream.py --host 127.0.0.1 --port 8080 > /tmp/remora-demo-app.log 2>&1 &
    app_pid=$!
    proxy/remora -c conf/remora.yaml &
    rem_pid=$!
    trap 'kill $rem_pid $app_pid 2>/dev/null; wait $rem_pid $app_pid 2>/dev/null; exit 0' INT TERM EXIT
    for _ in $(seq 50); do
        curl -fs -o /dev/null http://127.0.0.1:9090/readyz && break
        sleep 0.1
    done
    cat >&2 <<EOT

remora is running (pid $rem_pid) in front of a demo app on 127.0.0.1:8080 (pid $app_pid).
Try:
  curl -i http://127.0.0.1:8000/echo                 # through remora (traffic port)
  curl -i -H 'Host: api.example.com' http://127.0.0.1:8000/api/echo   # the "api" route
  curl -i http://127.0.0.1:8000/chunked?n=100000 -o /dev/null
  curl -s http://127.0.0.1:9090/metrics               # metrics port
  curl -i http://127.0.0.1:9090/readyz                # readiness (also /healthz)
Press Ctrl-C to stop.
EOT
    wait $rem_pid
}

# Runs pytest on the given tests; sets jp jf js (passed, failed, skipped).
run_pytest() {
    local junit
    junit=$(mktemp /tmp/remora-junit.XXXXXX.xml)
    set +e
    /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider --junitxml="$junit" "$@"
    set -e
    read -r jp jf js < <(/usr/bin/python3 - "$junit" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 1, 0); sys.exit()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
s = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - s, f, s)
PY
)
    rm -f "$junit"
}

# Every libFuzzer target (tests/fuzz/README.md) for FUZZ_SECONDS (15) from its seed corpus, in a
# clang --enable-fuzz build of a copy of the tracked files (build-fuzz/): each is one check, and
# any crash, leak, timeout or sanitizer report fails it.
fuzz_short() {
    log "fuzz targets, ${FUZZ_SECONDS:-15} s each (build-fuzz/, clang, ASan+UBSan+libFuzzer)"
    jp=0 jf=0 js=0
    if ! git rev-parse --git-dir >/dev/null 2>&1 || ! command -v clang >/dev/null; then
        log "not a git checkout, or no clang: fuzzing skipped"
        js=1
        return
    fi
    mkdir -p build-fuzz
    git ls-files -z | xargs -0 cp --parents -p -t build-fuzz 2>/dev/null || true
    local out
    out=$(
        cd build-fuzz || exit 1
        if [ ! -x configure ] || [ configure.ac -nt configure ]; then
            autoreconf -fi >/dev/null 2>&1
        fi
        if [ ! -f Makefile ]; then
            ./configure -q CC=clang --enable-fuzz >/dev/null || exit 1
        fi
        make fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-15}" 2>&1
    )
    printf '%s\n' "$out" | grep -E '^(== |stat::number_of_executed_units|#[0-9]+[[:space:]]+DONE)|FAILED' || true
    jp=$(printf '%s\n' "$out" | grep -c '^== fuzz_' || true)
    jf=$(printf '%s\n' "$out" | grep -c ': FAILED' || true)
    [ "$jp" -gt 0 ] || { jf=1; printf '%s\n' "$out" | tail -30; }
    jp=$((jp - jf))
}

# The unit tests (cmocka binaries) in the current directory's build: each test counts; a binary
# that exits nonzero (a crash, a sanitizer or LeakSanitizer report after its summary) counts one
# more failure. Sets jp jf js.
unit_tests() {
    local t out rc p f
    jp=0 jf=0 js=0
    for t in tests/unit/test_*; do
        [ -x "$t" ] && [ -f "$t" ] || continue
        rc=0
        out=$(CMOCKA_MESSAGE_OUTPUT=stdout "./$t" 2>&1) || rc=$?
        printf '%s\n' "$out" | grep -E '^\[  (FAILED|PASSED|  OK  |ERROR)' | grep -v '^\[       OK \]' || true
        p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        if [ -z "$p" ] && [ -z "$f" ]; then
            log "$t produced no cmocka summary (crashed?)"; printf '%s\n' "$out" | tail -20; f=1
        elif [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
            log "$t exited with status $rc after its summary (a sanitizer report?)"
            printf '%s\n' "$out" | grep -vE '^\[' | tail -40; f=1
        fi
        echo "$t: ${p:-0} passed, ${f:-0} failed"
        jp=$((jp + ${p:-0})); jf=$((jf + ${f:-0}))
    done
}

# The unit tests and the whole integration suite once more against an ASan+UBSan build (libc
# malloc), with leak detection: any sanitizer report fails the test (or unit binary) it came
# from (tests/integration/conftest.py, "sanitizer reports"). Built from a copy of the tracked
# files in build-asan/ (automake builds one configuration per tree).
sanitized() {
    log "unit and integration tests under ASan+UBSan (build-asan/, detect_leaks=1)"
    jp=0 jf=0 js=0
    if ! git rev-parse --git-dir >/dev/null 2>&1; then
        log "not a git checkout: the sanitizer pass copies the tracked files; skipped"
        js=1
        return
    fi
    mkdir -p build-asan
    git ls-files -z | xargs -0 cp --parents -p -t build-asan 2>/dev/null || true
    (
        cd build-asan
        if [ ! -x configure ] || [ configure.ac -nt configure ]; then
            autoreconf -fi >/dev/null 2>&1
        fi
        if [ ! -f Makefile ]; then
            ./configure -q --enable-asan --enable-ubsan >/dev/null
        fi
        make -j"$(nproc)" >/dev/null && make -j"$(nproc)" check TESTS= >/dev/null
    ) || { jp=0; jf=1; js=0; log "ASan build failed"; return; }
    export ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=4:abort_on_error=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    local up uf
    cd build-asan
    unit_tests
    cd "$ROOT"
    up=$jp uf=$jf
    REMORA_BIN="$ROOT/build-asan/proxy/remora" REMORA_SANITIZED=1 run_pytest tests/integration
    unset ASAN_OPTIONS UBSAN_OPTIONS
    jp=$((jp + up)); jf=$((jf + uf))
}

# valgrind memcheck over the unit binaries of the normal build (make check-valgrind): one check
# per binary; any memory error or definite or indirect leak fails it. Sets jp jf js.
valgrind_unit() {
    log "valgrind memcheck over the unit tests (make check-valgrind)"
    local out rc=0
    out=$(make -s check-valgrind 2>&1) || rc=$?
    printf '%s\n' "$out" | grep -v '^valgrind .*: ok$' || true
    jp=$(printf '%s\n' "$out" | grep -c '^valgrind .*: ok$' || true)
    jf=$(printf '%s\n' "$out" | grep -c '^valgrind .*: FAILED' || true)
    js=0
    if [ "$rc" -ne 0 ] && [ "$jf" -eq 0 ]; then jf=1; fi
}

# One check: the command's exit status. Adds to passed or failed (cmd_test's locals).
gate() {
    local what="$1"; shift
    log "$what"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# Reads the last "N passed, N failed[, N skipped]" line of a log into jp jf js; a nonzero exit
# status with no failure counted counts as one failure.
count_summary() {
    local logf="$1" rc="$2" line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$logf" | tail -1)
    jp=$(sed -nE 's/^([0-9]+) passed.*/\1/p' <<<"$line"); jp=${jp:-0}
    jf=$(sed -nE 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/p' <<<"$line"); jf=${jf:-0}
    js=$(sed -nE 's/.*, ([0-9]+) skipped.*/\1/p' <<<"$line"); js=${js:-0}
    if [ "$rc" -ne 0 ] && [ "$jf" -eq 0 ]; then jf=1; fi
}

# The Kubernetes manifests, validated offline (k8s/README.md): kubectl kustomize renders them,
# kubernetes-models (npm) checks schemas and unknown fields, remora --check their configs.
k8s_validate() {
    log "k8s manifests (k8s/validate.sh)"
    jp=0 jf=0 js=0
    if ! command -v kubectl >/dev/null && [ ! -x /usr/bin/kubectl ]; then
        log "no kubectl (1.29 or later, with kustomize): k8s validation skipped"
        js=1
        return
    fi
    command -v npm >/dev/null || install_deps nodejs npm
    local logf rc=0
    logf=$(mktemp /tmp/remora-k8s.XXXXXX)
    REMORA_BIN="$ROOT/proxy/remora" k8s/validate.sh >"$logf" 2>&1 || rc=$?
    grep -vE '^(ok|==|      \. )' "$logf" | tail -20 || true # failures and the summary
    count_summary "$logf" "$rc"
    rm -f "$logf"
}

cmd_test() {
    install_deps "${BUILD_DEPS[@]}" "${RUN_DEPS[@]}" "${TEST_DEPS[@]}" "${DEPLOY_DEPS[@]}"
    build "--enable-werror"
    local passed=0 failed=0 skipped=0 t0
    log "unit tests"
    make -j"$(nproc)" check TESTS= >/dev/null
    unit_tests
    passed=$((passed + jp)); failed=$((failed + jf))
    t0=$SECONDS
    valgrind_unit
    passed=$((passed + jp)); failed=$((failed + jf))
    log "valgrind: $((SECONDS - t0)) s"
    t0=$SECONDS
    gate "clang-tidy over proxy/ (make tidy, .clang-tidy: every warning fails)" make -s tidy
    log "clang-tidy: $((SECONDS - t0)) s"
    t0=$SECONDS
    gate "cppcheck over proxy/ and tests/unit (make cppcheck, .cppcheck-suppressions)" make -s cppcheck
    log "cppcheck: $((SECONDS - t0)) s"
    gate "layer gates (make check-layers: no include cycle, no ->h2 outside h2_*, no codec in stream, no foreign field writes)" \
        make -s check-layers
    gate "static binary (make static: fully static, stripped, only the allowed link warnings, under 3 MB gzip -9)" \
        make -s static
    log "integration tests (pytest)"
    t0=$SECONDS
    run_pytest tests/integration
    passed=$((passed + jp)); failed=$((failed + jf)); skipped=$((skipped + js))
    log "integration tests: $((SECONDS - t0)) s"
    t0=$SECONDS
    sanitized
    passed=$((passed + jp)); failed=$((failed + jf)); skipped=$((skipped + js))
    log "ASan+UBSan build and tests: $((SECONDS - t0)) s"
    fuzz_short
    passed=$((passed + jp)); failed=$((failed + jf)); skipped=$((skipped + js))
    k8s_validate
    passed=$((passed + jp)); failed=$((failed + jf)); skipped=$((skipped + js))
    log "image (docker/build-image.sh twice: reproducible, under 3 MB; run hardened under podman)"
    REMORA_STATIC_BIN="$ROOT/proxy/remora-static" run_pytest -s tests/image
    passed=$((passed + jp)); failed=$((failed + jf)); skipped=$((skipped + js))
    log "pod (podman kube play of k8s/example: one netns, ConfigMap swaps, SIGTERM under load)"
    REMORA_STATIC_BIN="$ROOT/proxy/remora-static" run_pytest -s tests/pod
    passed=$((passed + jp)); failed=$((failed + jf)); skipped=$((skipped + js))
    if [ "$skipped" -gt 0 ]; then
        echo "$passed passed, $failed failed, $skipped skipped"
    else
        echo "$passed passed, $failed failed"
    fi
    [ "$failed" -eq 0 ]
}

case "${1:-}" in
    run) cmd_run ;;
    test) cmd_test ;;
    *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac
