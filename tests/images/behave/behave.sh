#!/bin/bash
# PROMPT picks the behaviour: succeed | fail | hang | crash | sleep N | transient-once |
# count-and-sleep N | login-mark N | env | whoami
set -u
out=/work/out
repo="/work/${REPO_DIR:-repo}"
echo "behave: ${PROMPT}" >"$out/run.log"
# shellcheck disable=SC2086 # PROMPT is words here
set -- ${PROMPT}
case "$1" in
    succeed)
        printf '# done\n' >"$out/summary.md"
        printf '{"worker_field": "kept", "state": "done", "reason": "worker says ok"}\n' >"$out/exit.json"
        exit 0 ;;
    fail) echo "behave: failing on purpose" >&2; exit 3 ;;
    hang) exec sleep infinity ;;
    crash) kill -9 $$ ;;
    sleep) sleep "$2"; exit 0 ;;
    transient-once)
        if [ -e "$out/.attempted" ]; then exit 0; fi
        : >"$out/.attempted"
        printf '{"reason": "network failure while cloning (will be retried)"}\n' >"$out/exit.json"
        exit 75 ;;
    count-and-sleep)
        echo "start $(date +%s%N)" >>"$repo/starts"
        sleep "$2"
        echo "end $(date +%s%N)" >>"$repo/starts"
        exit 0 ;;
    login-mark)
        echo start >>"$HOME/.codex/marks"
        sleep "$2"
        echo end >>"$HOME/.codex/marks"
        exit 0 ;;
    env) env | sort >"$out/env.txt"; exit 0 ;;
    whoami) { id; touch "$repo/created-by-job"; } >"$out/id.txt"; exit 0 ;;
    *) echo "behave: unknown behaviour $1" >&2; exit 2 ;;
esac
