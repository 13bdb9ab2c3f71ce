#!/bin/bash
# PROMPT picks the behaviour: succeed | fail | hang | crash | sleep N | transient-once |
# count-and-sleep N | login-mark N | env | whoami | wedge | fill MB | oom-child | shout MB |
# rotate-login | poison-login | work-then-hang | chatter N | bundle |
# sh COMMAND (the rest of PROMPT, run by bash: a scripted agent)
set -u
out=/work/out
repo="/work/${REPO_DIR:-repo}"
echo "behave: ${PROMPT}" >"$out/run.log"
now() { date +%s%N; }
# shellcheck disable=SC2086 # PROMPT is words here
set -- ${PROMPT}
case "$1" in
    succeed)
        printf '# done\n' >"$out/summary.md"
        printf '{"agent_version": "behave", "branch": "forged", "state": "done", "reason": "worker says ok"}\n' >"$out/exit.json"
        exit 0 ;;
    fail) echo "behave: failing on purpose" >&2; exit 3 ;;
    hang) exec sleep infinity ;;
    chatter) # progress as Codex writes it, with markup an agent might emit, then a summary
        ev="$out/events.jsonl"
        echo '{"type":"turn.started"}' >>"$ev"
        echo '{"type":"item.started","item":{"id":"1","type":"command_execution","command":"echo <b>bold</b>","status":"in_progress"}}' >>"$ev"
        sleep 1
        echo '{"type":"item.completed","item":{"id":"1","type":"command_execution","command":"echo <b>bold</b>","aggregated_output":"","exit_code":0,"status":"completed"}}' >>"$ev"
        echo '{"type":"item.completed","item":{"id":"2","type":"agent_message","text":"<img src=x onerror=\"window.__xss=1\"> all good"}}' >>"$ev"
        sleep "$2"
        printf '# Done\n<script>window.__xss=2</script>\n' >"$out/summary.md"
        exit 0 ;;
    work-then-hang) # some work, then nothing: what a cancel must keep
        echo "half done" >"$repo/partial.txt"
        echo "working" >"$out/progress"
        exec sleep infinity ;;
    crash) kill -9 $$ ;;
    sleep) sleep "$2"; exit 0 ;;
    transient-once)
        [ "${WATCHERD_ATTEMPT:-1}" -gt 1 ] && exit 0
        printf '{"reason": "network failure while cloning (will be retried)"}\n' >"$out/exit.json"
        exit 75 ;;
    count-and-sleep)
        echo "start $(now)" >>"$out/starts"
        sleep "$2"
        echo "end $(now)" >>"$out/starts"
        exit 0 ;;
    login-mark)
        echo "start $(now) $(cat "$HOME/.codex/auth.json" 2>/dev/null)" >>"$out/marks"
        sleep "$2"
        echo "end $(now)" >>"$out/marks"
        exit 0 ;;
    env) env | sort >"$out/env.txt"; exit 0 ;;
    bundle) # the agent's commits, made by the test: the job's branch as a bundle (base64)
        printf '# %s\n\nMade by behave.\n' "${SUMMARY:-done}" >"$out/summary.md"
        printf '%s' "${BUNDLE_B64:?}" | base64 -d >"$out/branch.bundle"
        exit 0 ;;
    whoami) { id; ls -la "$repo"; ls -la "$HOME/.codex"; } >"$out/id.txt" 2>&1; exit 0 ;;
    wedge) # what a hostile agent could leave behind if it outlived the worker
        mkdir -p "$out/exit.json/x"
        ln -sf /etc/passwd "$out/summary.md"
        ln -sf /etc/shadow "$out/run.log.link"
        mkfifo "$out/events.jsonl"
        mkdir -p "$out/sub/.git" && printf '[core]\n\tfsmonitor = touch /tmp/pwned\n' >"$out/sub/.git/config"
        exit 0 ;;
    fill) dd if=/dev/zero of="$repo/big.bin" bs=1M count="$2" 2>/dev/null; sleep 30; exit 0 ;;
    oom-child) { head -c 2000m /dev/zero | tail; } 2>/dev/null; exit 0 ;;
    shout) head -c "$2"m /dev/zero | tr '\0' 'x'; exec sleep infinity ;;
    rotate-login) # a refresh as Codex does it: new tokens, same account
        jq -c '.tokens.refresh_token = "rotated" | .tokens.access_token = "new"' \
            "$HOME/.codex/auth.json" >"$HOME/.codex/auth.new" && mv "$HOME/.codex/auth.new" "$HOME/.codex/auth.json"
        exit 0 ;;
    poison-login) # someone else's account, for the jobs after this one
        printf '{"tokens": {"access_token": "a", "refresh_token": "r", "account_id": "attacker"}}' \
            >"$HOME/.codex/auth.json"
        exit 0 ;;
    sh) bash -c "${PROMPT#sh }"; exit $? ;;
    *) echo "behave: unknown behaviour $1" >&2; exit 2 ;;
esac
