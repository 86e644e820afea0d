#!/usr/bin/env bash
# Development PKI: a CA, a server certificate for localhost / 127.0.0.1, a client certificate
# (mutual TLS), and a JWT secret, in target/dev-pki (or $1). Never use these in production.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/dev-pki}
mkdir -p "$out"
cd "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -keyout ca.key -out ca.pem -subj "/CN=dispatch dev CA" 2>/dev/null
issue() { # name, subject, extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -out "$1.pem" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue client dispatch-router "extendedKeyUsage=clientAuth"
head -c 48 /dev/urandom | base64 | tr -d '\n' > jwt.secret
chmod 600 ./*.key jwt.secret
echo "development PKI in $(pwd): ca.pem server.pem/.key client.pem/.key jwt.secret"
