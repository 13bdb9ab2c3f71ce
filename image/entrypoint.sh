#!/bin/bash
# watcherd worker, the same for every agent: run the agent on a workspace, save what it
# changed as commits on the job's branch, leave truthful outputs.
#
# Contract (environment): PROMPT (required); REPO_DIR (default "repo"); JOB_BRANCH
# (default "watcherd/result"); for the agent: AGENT_MODE (exec|review), AGENT_MODEL,
# AGENT_MAX_TURNS, AGENT_RESUME, AGENT_FLAGS.
# /work/$REPO_DIR is the git work tree watcherd prepared. Without one (a plain
# `docker run`), REPO_URL (and REPO_REF) are cloned into it first.
# The agent itself is run by the image's hook, /usr/local/lib/watcherd/agent: `--version`
# prints its version; `run` runs it headless on the prompt in $PROMPT_FILE (data, never an
# option), in the work tree, writing its own JSON event stream to $OUT/events.jsonl, its
# final message to $OUT/last-message.md, its stderr to $OUT/run.log, and exits with the
# agent's code.
# Outputs in /work/out: run.log, events.jsonl, last-message.md, summary.md, exit.json, and
# branch.bundle (the job's new commits on refs/heads/$JOB_BRANCH, when there are any).
#
# Exit codes: 0 done; 1 the agent failed; 64 bad input; 65 bad ref; 66 repo refused or
# missing; 70 internal error; 75 transient (network), worth retrying; 124 stopped (timeout).
set -uo pipefail
set -f # no globbing: PROMPT and flags are data

readonly OUT=/work/out
readonly AGENT=/usr/local/lib/watcherd/agent
readonly EX_AGENT=1 EX_USAGE=64 EX_REF=65 EX_REPO=66 EX_SOFTWARE=70 EX_TEMPFAIL=75
readonly EX_STOPPED=124

started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
started_epoch=$(date +%s)
repo=""
JOB_BRANCH=${JOB_BRANCH:-watcherd/result}
commit_before=""
commit_after=""
agent_version=""
state="failed"
reason=""
stopping=""
agent=""

# HOME must be writable for git's global config, whatever --user this runs as.
if [ ! -w "${HOME:-/nonexistent}" ]; then
    HOME=$(mktemp -d)
    export HOME
fi

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

redact() { sed -E 's#([A-Za-z][A-Za-z0-9+.-]*://)[^/@[:space:]]*@#\1***@#g'; }

write_exit_json() {
    local code=$1 finished_epoch
    finished_epoch=$(date +%s)
    jq -n \
        --argjson exit_code "$code" \
        --arg state "$state" \
        --arg reason "$reason" \
        --arg started_at "$started_at" \
        --arg finished_at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        --argjson duration_seconds "$((finished_epoch - started_epoch))" \
        --arg repo_url "$(printf '%s' "${REPO_URL:-}" | redact)" \
        --arg repo_ref "${REPO_REF:-}" \
        --arg repo_dir "${REPO_DIR:-repo}" \
        --arg commit_before "$commit_before" \
        --arg commit_after "$commit_after" \
        --arg agent_version "$agent_version" \
        '{exit_code: $exit_code, state: $state, reason: $reason,
          started_at: $started_at, finished_at: $finished_at,
          duration_seconds: $duration_seconds, repo_url: $repo_url,
          repo_ref: (if $repo_ref == "" then null else $repo_ref end), repo_dir: $repo_dir,
          commit_before: (if $commit_before == "" then null else $commit_before end),
          commit_after: (if $commit_after == "" then null else $commit_after end),
          agent_version: $agent_version}' >"$OUT/exit.json.tmp" && mv -f "$OUT/exit.json.tmp" "$OUT/exit.json"
}

# git for the worker's own steps: no hooks, no fsmonitor, no pager, nothing from a
# global or system config the agent could have written.
wgit() {
    GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
        git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.pager=cat \
        -c commit.gpgSign=false -c tag.gpgSign=false \
        -c safe.directory="$repo" -c advice.detachedHead=false "$@"
}

write_summary() {
    {
        printf '# watcherd job summary\n\n'
        printf -- '- **State:** %s\n' "$state"
        [ -n "$reason" ] && printf -- '- **Reason:** %s\n' "$reason"
        printf -- '- **Repository:** %s\n' "$(printf '%s' "${REPO_URL:-}" | redact)"
        printf -- '- **Ref:** %s\n' "${REPO_REF:-(default branch)}"
        printf -- '- **Branch:** %s\n' "$JOB_BRANCH"
        printf -- '- **Commit before:** %s\n' "${commit_before:-(none)}"
        printf -- '- **Commit after:** %s\n' "${commit_after:-(none)}"
        printf -- '- **Agent:** %s %s\n' "${WATCHERD_AGENT:-agent}" "${agent_version:-(not run)}"
        printf '\n## Final message\n\n'
        if [ -f "$OUT/last-message.md" ] && [ ! -L "$OUT/last-message.md" ]; then
            head -c 65536 "$OUT/last-message.md"
        else
            printf '(none)\n'
        fi
        printf '\n## Files changed\n\n'
        if [ -n "$commit_before" ] && [ -n "$commit_after" ]; then
            local changes
            changes=$(cd "$repo" && wgit diff --stat "$commit_before" "$commit_after" -- 2>/dev/null)
            # shellcheck disable=SC2016 # literal Markdown fences
            if [ -n "$changes" ]; then printf '```\n%s\n```\n' "$changes"; else printf '(none)\n'; fi
        else
            printf '(no repository)\n'
        fi
    } >"$OUT/summary.md.tmp" && mv -f "$OUT/summary.md.tmp" "$OUT/summary.md"
}

finish() {
    local code=$1
    [ "$code" -eq 0 ] && state="done"
    write_summary
    write_exit_json "$code"
    log "finished: $state${reason:+ ($reason)}"
    exit "$code"
}

fail() { reason=$2; log "error: $reason"; finish "$1"; }

# Every process but this shell and init: what the agent may have left running.
leftovers() {
    local dir pid key value found=""
    set +f
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        { [ "$pid" = 1 ] || [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ]; } && continue
        value=""
        { while IFS=$'\t ' read -r key value _; do
            [ "$key" = State: ] && break
        done <"$dir/status"; } 2>/dev/null
        [ -n "$value" ] && [ "$value" != Z ] && found="$found $pid"
    done
    set -f
    printf '%s' "$found"
}

# Nothing the agent started may run on while its work is saved, or touch it after.
stop_leftovers() {
    local round
    for round in 1 2 3 4 5 6 7 8 9 10; do
        kill -KILL -1 2>/dev/null # everything this user may signal but this shell
        [ -z "$(leftovers)" ] && return 0
        sleep 0.1
    done
    log "warning: processes still alive after ${round} rounds of SIGKILL:$(leftovers)"
}

# Commit what the agent left uncommitted onto the job's branch and bundle the branch's new
# commits for the daemon, which takes them in with fsck. The agent could have rewritten the
# repository's config (core.fsmonitor, filters, hooks): start again from a plain one.
save_work() {
    cd "$repo" 2>/dev/null || return 0
    if [ ! -d .git ] || [ -L .git ]; then
        log "warning: .git is not a folder; nothing saved"
        return 0
    fi
    [ -n "$commit_before" ] || return 0
    printf '[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n' >.git/config
    # Git also reads a config through .git/commondir and config.worktree, attributes from
    # info/: gone, and git pinned to this .git (no discovery, no common dir elsewhere).
    rm -rf .git/hooks .git/info .git/commondir .git/config.worktree
    export GIT_DIR="$repo/.git" GIT_COMMON_DIR="$repo/.git" GIT_WORK_TREE="$repo"
    # --ignore-errors: what git cannot add (an empty nested repository) must not cost the rest.
    wgit add -A --ignore-errors . >>"$OUT/run.log" 2>&1 || log "warning: some files could not be added"
    if ! wgit diff --cached --quiet 2>/dev/null; then
        wgit commit -q --no-verify -m "watcherd: changes left by the agent" \
            -m "Job ${WATCHERD_JOB_ID:-?}: the agent's uncommitted changes when it finished." \
            >>"$OUT/run.log" 2>&1 || log "warning: could not commit the agent's changes"
    fi
    commit_after=$(wgit rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null)
    [ -n "$commit_after" ] || { log "warning: no HEAD commit; nothing saved"; return 0; }
    wgit update-ref "refs/heads/$JOB_BRANCH" "$commit_after" || return 0
    rm -f "$OUT/branch.bundle"
    if [ "$commit_after" != "$commit_before" ]; then
        wgit bundle create -q "$OUT/branch.bundle" "refs/heads/$JOB_BRANCH" "^$commit_before" \
            >>"$OUT/run.log" 2>&1 || log "warning: could not bundle the job's commits"
        log "saved $(wgit rev-list --count "$commit_before..$commit_after" 2>/dev/null) commit(s) on $JOB_BRANCH"
    fi
}

# Without watcherd's workspace (a plain `docker run`): clone REPO_URL into /work/$REPO_DIR.
clone_workspace() {
    local errors target ref=${REPO_REF:-}
    [ -n "${REPO_URL:-}" ] || fail $EX_USAGE "REPO_URL is required without a prepared workspace"
    case "$REPO_URL" in -*) fail $EX_USAGE "REPO_URL must not start with '-'" ;; esac
    safe_url=$(printf '%s' "$REPO_URL" | redact)
    errors=$(mktemp)
    log "cloning $safe_url into $repo"
    if ! wgit clone --no-checkout -- "$REPO_URL" "$repo" 2>"$errors"; then
        if grep -qiE 'could not resolve|connection (refused|reset|timed out)|timed out|failed to connect|network is unreachable|temporary failure|early eof|the remote end hung up|HTTP 5[0-9][0-9]' "$errors"; then
            fail $EX_TEMPFAIL "network failure while cloning $safe_url (will be retried)"
        fi
        fail $EX_REPO "could not clone $safe_url: $(grep -iE 'fatal|error' "$errors" | tail -n 1 | redact)"
    fi
    cd "$repo" || fail $EX_SOFTWARE "cannot enter $repo"
    if [ -z "$ref" ]; then
        target=$(wgit rev-parse -q --verify 'refs/remotes/origin/HEAD^{commit}')
    else
        target=$(wgit rev-parse -q --verify --end-of-options "refs/remotes/origin/$ref^{commit}" 2>/dev/null) ||
            target=$(wgit rev-parse -q --verify --end-of-options "refs/tags/$ref^{commit}" 2>/dev/null) ||
            target=$(wgit rev-parse -q --verify --end-of-options "$ref^{commit}" 2>/dev/null)
    fi
    [ -n "$target" ] || fail $EX_REF "ref '${ref:-default branch}' not found in $safe_url"
    wgit checkout -q -B "$JOB_BRANCH" "$target" 2>>"$OUT/run.log" || fail $EX_REF "cannot check out $target"
}

# A job's only ways out are its sockets in /run/watcherd, which the daemon serves: its model
# (the gateway) and, where the job picked allowlists, its egress proxy. Each becomes a port
# on this container's loopback for the agent. Killing a forwarder hurts only this job.
# nodelay: without it the first event of a stream waits for a delayed ACK (40 ms).
start_forwarders() {
    local name port pair
    for pair in "model:${WATCHERD_MODEL_PORT:-}" "egress:${WATCHERD_EGRESS_PORT:-}"; do
        name=${pair%%:*} port=${pair#*:}
        [ -n "$port" ] || continue
        case "$port" in *[!0-9]*) fail $EX_USAGE "WATCHERD_${name^^}_PORT is not a port" ;; esac
        [ -S "/run/watcherd/$name.sock" ] || fail $EX_TEMPFAIL "no $name socket in /run/watcherd"
        socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,nodelay" \
            "UNIX-CONNECT:/run/watcherd/$name.sock" 2>>"$OUT/run.log" &
        for _ in $(seq 1 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue 2
            sleep 0.02
        done
        fail $EX_TEMPFAIL "the $name forwarder did not start"
    done
}

# shellcheck disable=SC2317 # called by the trap below
on_stop() { # timeout: stop the agent, then save what it did (the daemon waits a grace period)
    stopping=1
    [ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null
}
trap on_stop TERM INT

# -- 1. inputs and outputs -----------------------------------------------------------------
if ! mkdir -p "$OUT" 2>/dev/null || [ ! -w "$OUT" ]; then
    echo "watcherd-worker: $OUT is not writable by uid $(id -u)" >&2
    exit $EX_USAGE
fi
: >"$OUT/run.log"
log "watcherd worker starting as uid $(id -u)"
[ -n "${PROMPT:-}" ] || fail $EX_USAGE "PROMPT is required"
REPO_DIR=${REPO_DIR:-repo}
case "$REPO_DIR" in
    */* | . | .. | -* | .* | "") fail $EX_USAGE "REPO_DIR must be one folder name" ;;
esac
repo="/work/$REPO_DIR"
wgit check-ref-format "refs/heads/$JOB_BRANCH" || fail $EX_USAGE "JOB_BRANCH is not a branch name"
# An identity for commits (watcherd sets its configured one): a plain `git commit` works.
export GIT_AUTHOR_NAME=${GIT_AUTHOR_NAME:-watcherd} GIT_AUTHOR_EMAIL=${GIT_AUTHOR_EMAIL:-watcherd@localhost}
export GIT_COMMITTER_NAME=${GIT_COMMITTER_NAME:-$GIT_AUTHOR_NAME}
export GIT_COMMITTER_EMAIL=${GIT_COMMITTER_EMAIL:-$GIT_AUTHOR_EMAIL}

# -- 2. the workspace ------------------------------------------------------------------------
if [ -d "$repo/.git" ]; then
    cd "$repo" || fail $EX_SOFTWARE "cannot enter $repo"
else
    clone_workspace
fi
commit_before=$(wgit rev-parse -q --verify 'HEAD^{commit}') || fail $EX_REPO "$repo has no commit checked out"
log "workspace at $commit_before on $JOB_BRANCH"

# -- 3. run the agent ------------------------------------------------------------------------
[ -x "$AGENT" ] || fail $EX_SOFTWARE "this image has no agent ($AGENT)"
agent_version=$("$AGENT" --version 2>/dev/null | head -n 1)
case "${AGENT_MODE:-exec}" in exec | review) ;; *) fail $EX_USAGE "AGENT_MODE must be exec or review" ;; esac
# The prompt is data: the hook reads it from this file (stdin, a flag's value), so no prompt
# can be read as an option ("--version"), a subcommand ("review") or be cut by argv limits.
PROMPT_FILE=$(mktemp)
printf '%s' "$PROMPT" >"$PROMPT_FILE"
export PROMPT_FILE OUT
log "running ${WATCHERD_AGENT:-the agent} ${AGENT_MODE:-exec} ($agent_version)"
rm -f "$OUT/last-message.md" "$OUT/branch.bundle"
: >"$OUT/events.jsonl"
start_forwarders
"$AGENT" run </dev/null &
agent=$!
agent_status=0
while true; do
    wait "$agent"
    agent_status=$?
    kill -0 "$agent" 2>/dev/null || break # a trapped signal ended the wait, not the agent
done
rm -f "$PROMPT_FILE"
stop_leftovers
save_work

if [ -n "$stopping" ]; then
    fail $EX_STOPPED "stopped (timeout) while the agent ran; its work so far is saved"
fi
if [ "$agent_status" -ne 0 ]; then
    fail $EX_AGENT "${WATCHERD_AGENT:-the agent} exited with code $agent_status"
fi
reason="${WATCHERD_AGENT:-the agent} finished"
finish 0
