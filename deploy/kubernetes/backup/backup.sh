#!/bin/sh
# The state backup of the Velostream pods, run by cronjob.yaml every 15
# minutes (docs/operations.md, "Backups and recovery targets").
#
# For each running pod that POD_SELECTOR selects (and, with VELOSTREAM_COLOUR
# set, only the pods labelled environment=VELOSTREAM_COLOUR):
#   1. `velostream state backup` in the pod holds its service (POST
#      /checkpoint), copies every verified checkpoint into
#      STAGING_DIR/<stamp> on the pod's state volume and releases the service
#      (POST /resume);
#   2. tar streams that directory out through kubectl exec into
#      BACKUP_DIR/<pod>/<stamp>/ (as <stamp>.partial, renamed once complete);
#   3. the staging directory is removed from the pod.
# Then the backups older than RETENTION_DAYS are deleted, except the newest
# of each pod.
#
# Prints one line per pod (OK or FAILED) and a summary. Exits 1 when the
# backup of any pod failed (every pod is still tried), when no pod runs, or
# when pruning failed.
#
# Its settings come from the environment (cronjob.yaml);
# scripts/check_manifests.py checks them against the StatefulSet and the
# binary, and runs this script against stand-in pods.

set -u

: "${NAMESPACE:?}" "${POD_SELECTOR:?}" "${CONTAINER:?}" "${SERVICE_URL:?}" \
    "${CACERT:?}" "${CLIENT_CERT:?}" "${CLIENT_KEY:?}" "${STATE_DIR:?}" \
    "${STAGING_DIR:?}" "${BACKUP_DIR:?}" "${RETENTION_DAYS:?}"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT

# the last lines (default 3) of a file, on one line
last() {
    tail -n "${2:-3}" "$1" 2>/dev/null | tr '\n' ' ' | sed 's/ *$//'
}

pods=$(kubectl get pods --namespace "${NAMESPACE}" \
    --selector "${POD_SELECTOR}${VELOSTREAM_COLOUR:+,environment=${VELOSTREAM_COLOUR}}" \
    --field-selector status.phase=Running \
    -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}' 2>"$work/pods.log") || {
    echo "FAILED listing the pods: $(last "$work/pods.log")"
    exit 1
}

total=0
failed=0
for pod in $pods; do
    total=$((total + 1))
    log="$work/$pod.log"
    status="$work/$pod.status"
    result=""
    note=""
    if [ -e "${BACKUP_DIR}/${pod}/${stamp}" ]; then
        echo "FAILED $pod: ${BACKUP_DIR}/${pod}/${stamp} exists already"
        failed=$((failed + 1))
        continue
    fi

    # what an interrupted run left in the pod (runs never overlap:
    # concurrencyPolicy Forbid)
    if ! kubectl exec --namespace "${NAMESPACE}" "${pod}" --container "${CONTAINER}" -- \
        rm -rf "${STAGING_DIR}" >"$log" 2>&1; then
        echo "FAILED $pod: cannot run a command in the pod: $(last "$log")"
        failed=$((failed + 1))
        continue
    fi

    # 1. hold the service, copy its checkpoints, release it; the API token is
    #    the pod's own VELOSTREAM_TOKEN, which --token reads
    if kubectl exec --namespace "${NAMESPACE}" "${pod}" --container "${CONTAINER}" -- \
        velostream state backup \
        --service "${SERVICE_URL}" \
        --cacert "${CACERT}" \
        --cert "${CLIENT_CERT}" \
        --key "${CLIENT_KEY}" \
        --state-dir "${STATE_DIR}" \
        --to "${STAGING_DIR}/${stamp}" >"$log" 2>&1; then
        # "backed up N checkpoint(s) to DIR"
        summary=$(last "$log" 1)

        # 2. stream it out, into <stamp>.partial until complete
        if mkdir -p "${BACKUP_DIR}/${pod}/${stamp}.partial" 2>>"$status"; then
            { kubectl exec --namespace "${NAMESPACE}" "${pod}" --container "${CONTAINER}" -- \
                tar -C "${STAGING_DIR}/${stamp}" -cf - . 2>"$log" ||
                echo "in the pod: $(last "$log")" >>"$status"; } |
                tar -C "${BACKUP_DIR}/${pod}/${stamp}.partial" -xf - 2>"$work/$pod.untar" ||
                echo "here: $(last "$work/$pod.untar")" >>"$status"
        else
            echo "cannot create ${BACKUP_DIR}/${pod}/${stamp}.partial" >>"$status"
        fi
        if [ -s "$status" ]; then
            result="FAILED $pod: copying the backup out: $(last "$status")"
            rm -rf "${BACKUP_DIR}/${pod}/${stamp}.partial"
        elif ! mv "${BACKUP_DIR}/${pod}/${stamp}.partial" "${BACKUP_DIR}/${pod}/${stamp}" 2>"$status"; then
            result="FAILED $pod: $(last "$status")"
        else
            result="OK $pod ${BACKUP_DIR}/${pod}/${stamp}: $summary"
        fi
    else
        result="FAILED $pod: velostream state backup: $(last "$log")"
    fi

    # 3. remove the copy in the pod
    if ! kubectl exec --namespace "${NAMESPACE}" "${pod}" --container "${CONTAINER}" -- \
        rm -rf "${STAGING_DIR}" >"$log" 2>&1; then
        note=" (${STAGING_DIR} is left in the pod, the next run removes it: $(last "$log"))"
    fi
    case "$result" in
    OK*) ;;
    *) failed=$((failed + 1)) ;;
    esac
    echo "$result$note"
done

# retention: the backups older than RETENTION_DAYS, never the newest of a pod
minutes=$((RETENTION_DAYS * 24 * 60))
pruned=0
prune_failed=0
for dir in "${BACKUP_DIR}"/*/; do
    [ -d "$dir" ] || continue
    case "$dir" in
    */lost+found/) continue ;;
    esac
    # copies an interrupted run left
    rm -rf "$dir"*.partial || prune_failed=1
    # the stamps sort by time, and so does the glob
    newest=""
    for backup in "$dir"*/; do
        [ -d "$backup" ] && newest=$(basename "$backup")
    done
    old=$(find "$dir" -mindepth 1 -maxdepth 1 -type d -mmin "+$minutes" ! -name "$newest") || prune_failed=1
    for backup in $old; do
        if rm -rf "$backup"; then
            pruned=$((pruned + 1))
        else
            prune_failed=1
        fi
    done
done
[ "$prune_failed" -eq 0 ] || echo "FAILED removing old backups under ${BACKUP_DIR}"

if [ "$total" -eq 0 ]; then
    echo "FAILED no running pod with labels" \
        "${POD_SELECTOR}${VELOSTREAM_COLOUR:+,environment=${VELOSTREAM_COLOUR}} in ${NAMESPACE}"
fi
echo "$((total - failed)) of $total pod(s) backed up under ${BACKUP_DIR};" \
    "$pruned backup(s) older than $RETENTION_DAYS days removed"
[ "$total" -gt 0 ] && [ "$failed" -eq 0 ] && [ "$prune_failed" -eq 0 ]
