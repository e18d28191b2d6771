#!/usr/bin/env bash
# with-progress.sh LABEL COMMAND...: runs COMMAND and, while it runs, says
# every 30 seconds that LABEL is still in progress and for how long; then
# how long it took. For the long first builds of make dev and make test
# (kube-apiserver from Go modules), which print nothing for minutes.
set -uo pipefail
label=$1
shift
start=$SECONDS
elapsed() { printf '%dm%02ds' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }
(
	while sleep 30; do
		echo "  ... still building $label ($(elapsed))"
	done
) &
ticker=$!
trap 'kill $ticker 2>/dev/null' EXIT
"$@"
rc=$?
if [ $rc -eq 0 ]; then
	echo "  built $label in $(elapsed)"
else
	echo "  building $label failed after $(elapsed)" >&2
fi
exit $rc
