#!/usr/bin/env bash
# The nightly job: score today's file, check it for drift, retrain when a trigger fires. Exit codes decide.
#
#   nightly.sh TODAY [HISTORY]     TODAY: the night's rows; HISTORY: labelled recent rows for retrain (default TODAY)
#
# From cron, with absolute paths (cron's PATH has no virtual environment) and the log appended to a file:
#   MLOPS_REGISTRY=/srv/mlops/registry
#   15 2 * * *  /srv/flights/sample_data/nightly.sh /srv/flights/data/today.parquet /srv/flights/data/last-30-days.parquet >> /srv/flights/logs/nightly.log 2>&1
#
# Environment: MLOPS (the mlops executable; default: this checkout's .venv), MODEL (default flights), TARGET and
# TIME_COLUMN (default delayed, date), OUT (reports and predictions; default ./nightly), NOTIFY (a command given one
# line for a person, e.g. a script that mails or pages; default: print it). Exit 0 when all went well, 1 when
# something needs a look.
set -uo pipefail
TODAY=${1:?usage: nightly.sh TODAY [HISTORY]}
HISTORY=${2:-$TODAY}
MLOPS=${MLOPS:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/mlops}
MODEL=${MODEL:-flights}
TARGET=${TARGET:-delayed}
TIME_COLUMN=${TIME_COLUMN:-date}
OUT=${OUT:-nightly}
NOTIFY=${NOTIFY:-echo}
day=$(date +%F)
mkdir -p "$OUT"
status=0

# 1. Score. Any failure leaves no predictions behind (all or nothing) and stops the night: nothing else is trusted.
if ! "$MLOPS" score-batch "$MODEL@production" "$TODAY" "$OUT/scores-$day.parquet" -q -o "$OUT/score-$day.json" \
        --overwrite; then
    $NOTIFY "$MODEL: scoring failed, no predictions for $day (see $OUT/score-$day.json)"
    exit 1
fi

# 2. Drift. Exit 1 is the verdict "drift" (a report for a person to read); 2 and above mean the check itself failed.
"$MLOPS" drift-report "$TODAY" --model "$MODEL@production" --fail-on-drift --html "$OUT/drift-$day.html" \
    -o "$OUT/drift-$day.json" --overwrite -q
case $? in
    0) ;;
    1) $NOTIFY "$MODEL: drift in $day's data (see $OUT/drift-$day.html)"; status=1 ;;
    *) $NOTIFY "$MODEL: the drift check failed (see $OUT/drift-$day.json)"; exit 1 ;;
esac

# 3. Retrain. It evaluates its own triggers (drift, performance, age) and promotes only a proven winner.
# Exit 0: nothing fired, or the challenger was promoted; 1: the challenger lost or was rolled back (the champion
# stays, and that is worth a look); anything else is an error.
"$MLOPS" retrain "$MODEL" --data "$HISTORY" --target "$TARGET" --time-column "$TIME_COLUMN" --max-age-days 30 \
    -o "$OUT/retrain-$day.json" --overwrite -q
case $? in
    0) ;;
    1) $NOTIFY "$MODEL: a retrained challenger was not promoted (see $OUT/retrain-$day.json)"; status=1 ;;
    *) $NOTIFY "$MODEL: retrain failed (see $OUT/retrain-$day.json)"; exit 1 ;;
esac
exit $status
