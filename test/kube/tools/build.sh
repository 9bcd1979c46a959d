#!/usr/bin/env bash
# Builds kube-apiserver and etcd for the integration tests in test/kube from
# the Go module proxy into .cache/kube/bin, named by version so a warm run (or
# a version bump) reuses or replaces exactly what it should. The stable names
# kube-apiserver and etcd are symlinks to the current versions.
set -euo pipefail
tools=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$tools/../../.." && pwd)
out=${KUBE_TOOLS_DIR:-$root/.cache/kube/bin}
mkdir -p "$out"

version() { (cd "$tools/$1" && go list -m -f '{{.Version}}' "$2"); }

# build NAME MODULE-DIR VERSION PACKAGE [LDFLAGS]
build() {
	local name=$1 dir=$2 ver=$3 pkg=$4 ldflags=${5:-}
	local bin=$out/$name-$ver
	if [[ ! -x $bin ]]; then
		echo "kube-tools: building $name $ver (cold: minutes; cached afterwards)" >&2
		local start=$SECONDS
		# -trimpath everywhere so every build shares one GOCACHE; nice because
		# the compile is long and the machine is shared.
		(cd "$tools/$dir" && nice -n 10 go build -trimpath -ldflags="-s -w $ldflags" -o "$bin.tmp" "$pkg")
		mv "$bin.tmp" "$bin"
		echo "kube-tools: $name $ver built in $((SECONDS - start))s" >&2
	fi
	ln -sfn "$name-$ver" "$out/$name"
}

etcd=$(version etcd go.etcd.io/etcd/server/v3)
build etcd etcd "$etcd" .

k8s=$(version apiserver k8s.io/kubernetes)
minor=${k8s#v1.}
minor=${minor%%.*}
# Stamp the version: an unstamped build reports v0.0.0-master, which makes
# discovery and version-skew checks misleading.
build kube-apiserver apiserver "$k8s" k8s.io/kubernetes/cmd/kube-apiserver \
	"-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
