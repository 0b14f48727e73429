#!/bin/sh
# make-tls-secret.sh NAMESPACE [PODS]
#
# Makes the cluster's CA (once, in $PKI, default ./pki), a server
# certificate for each of the pods discoverd-0 .. discoverd-(PODS-1)
# (default 5: enough for overlays/five), and a client certificate for you;
# then creates or updates the Secret discoverd-tls in NAMESPACE with the CA
# certificate and the pods' certificates and keys. The CA key and your client
# certificate stay in $PKI, never in the cluster.
#
# Each pod's certificate names what its peers and clients reach it by: its
# DNS names under the headless Service discoverd, the client Service
# discoverd-client, and 127.0.0.1 and localhost (kubectl exec, port-forward).
#
# To renew the pods' certificates with the same CA: move $PKI/secret away
# and run it again. Needs discoverd (or $DISCOVERD_BIN) and kubectl (or
# $KUBECTL) on the PATH; $CLUSTER_NAME (default "default") must be the
# cluster-name of base/discoverd.yaml, $CLUSTER_DOMAIN (default
# cluster.local) the cluster's DNS domain.
set -eu

usage="usage: $0 NAMESPACE [PODS]   (PODS: how many pods to make certificates for, default 5)"
ns=${1:?$usage}
pods=${2:-5}
case $pods in
'' | *[!0-9]*) echo "$0: PODS must be a number, not '$pods'; $usage" >&2; exit 2 ;;
esac
if [ "$pods" -lt 1 ]; then
	echo "$0: PODS must be at least 1; $usage" >&2
	exit 2
fi
pki=${PKI:-pki}
discoverd=${DISCOVERD_BIN:-discoverd}
kubectl=${KUBECTL:-kubectl}
cluster=${CLUSTER_NAME:-default}
domain=${CLUSTER_DOMAIN:-cluster.local}
sts=discoverd            # the StatefulSet (pods are $sts-0, $sts-1, ...)
headless=discoverd       # its headless Service
client=discoverd-client  # the clients' Service
secret=discoverd-tls     # the Secret the StatefulSet mounts

if [ -e "$pki/secret" ]; then
	echo "$0: $pki/secret exists: move it away to make new certificates" >&2
	exit 1
fi
mkdir -p "$pki"
if [ ! -e "$pki/ca.pem" ]; then
	"$discoverd" tls ca create -out "$pki" -cluster-name "$cluster"
fi
mkdir "$pki/secret"
cp "$pki/ca.pem" "$pki/secret/ca.pem"

names() { # names NAME: NAME.NAMESPACE, NAME.NAMESPACE.svc, NAME.NAMESPACE.svc.DOMAIN
	printf '%s,%s.%s,%s.%s.svc,%s.%s.svc.%s' "$1" "$1" "$ns" "$1" "$ns" "$1" "$ns" "$domain"
}
i=0
while [ "$i" -lt "$pods" ]; do
	pod=$sts-$i
	"$discoverd" tls cert create -server -node "$pod" -cluster-name "$cluster" \
		-addr "$(names "$pod.$headless"),$(names "$client"),localhost,127.0.0.1" \
		-ca "$pki/ca.pem" -ca-key "$pki/ca-key.pem" -out "$pki/secret"
	i=$((i + 1))
done
if [ ! -e "$pki/client-admin.pem" ]; then
	"$discoverd" tls cert create -client -name admin -cluster-name "$cluster" \
		-ca "$pki/ca.pem" -ca-key "$pki/ca-key.pem" -out "$pki"
fi

"$kubectl" -n "$ns" create secret generic "$secret" --from-file="$pki/secret" --dry-run=client -o yaml |
	"$kubectl" -n "$ns" apply -f -
echo "Secret $secret in namespace $ns holds $pki/secret; your client certificate is $pki/client-admin.pem"
