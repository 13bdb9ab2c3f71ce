#!/bin/bash
# watcherd worker: clone (or update) a repo, run Codex in it, leave truthful outputs.
#
# Contract (environment): REPO_URL, PROMPT (required); REPO_DIR (default "repo"),
# REPO_REF, CODEX_MODE (exec|review), CODEX_FLAGS, CODEX_MODEL (optional).
# Outputs in /work/out: run.log, events.jsonl, last-message.md, summary.md, exit.json.
#
# Exit codes: 0 done; 1 Codex failed; 64 bad input; 65 bad ref; 66 repo refused or
# missing; 70 internal error; 75 transient (network), worth retrying.
set -uo pipefail
set -f # no globbing: PROMPT and flags are data

readonly OUT=/work/out
readonly EX_CODEX=1 EX_USAGE=64 EX_REF=65 EX_REPO=66 EX_SOFTWARE=70 EX_TEMPFAIL=75

started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
started_epoch=$(date +%s)
commit_before=""
commit_after=""
codex_version=""
state="failed"
reason=""

# HOME must be writable for git's global config, whatever --user this runs as.
if [ ! -w "${HOME:-/nonexistent}" ]; then
    HOME=$(mktemp -d)
    export HOME
fi

# Without a mounted login (API-key mode) the Codex home starts empty on the tmpfs HOME.
if ! mkdir -p "${CODEX_HOME:=$HOME/.codex}" 2>/dev/null; then
    CODEX_HOME="$HOME/.codex"
    mkdir -p "$CODEX_HOME"
fi
export CODEX_HOME

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
        --arg codex_version "$codex_version" \
        --arg thread_id "$(thread_id)" \
        --argjson usage "$(token_usage)" \
        '{exit_code: $exit_code, state: $state, reason: $reason,
          started_at: $started_at, finished_at: $finished_at,
          duration_seconds: $duration_seconds, repo_url: $repo_url,
          repo_ref: (if $repo_ref == "" then null else $repo_ref end), repo_dir: $repo_dir,
          commit_before: (if $commit_before == "" then null else $commit_before end),
          commit_after: (if $commit_after == "" then null else $commit_after end),
          codex_version: $codex_version,
          thread_id: (if $thread_id == "" then null else $thread_id end),
          usage: $usage}' >"$OUT/exit.json.tmp" && mv -f "$OUT/exit.json.tmp" "$OUT/exit.json"
}

thread_id() {
    [ -s "$OUT/events.jsonl" ] || return 0
    jq -r 'select(.type == "thread.started") | .thread_id // empty' "$OUT/events.jsonl" 2>/dev/null | head -n 1
}

token_usage() {
    local usage=""
    if [ -s "$OUT/events.jsonl" ]; then
        usage=$(jq -c -s '[.[] | select(.type == "turn.completed") | .usage // empty]
            | if length == 0 then null else
              reduce .[] as $u ({}; reduce ($u | to_entries[]) as $e (.; .[$e.key] += ($e.value // 0)))
              end' "$OUT/events.jsonl" 2>/dev/null)
    fi
    printf '%s' "${usage:-null}"
}

write_summary() {
    local repo=$1
    {
        printf '# watcherd job summary\n\n'
        printf -- '- **State:** %s\n' "$state"
        [ -n "$reason" ] && printf -- '- **Reason:** %s\n' "$reason"
        printf -- '- **Repository:** %s\n' "$(printf '%s' "${REPO_URL:-}" | redact)"
        printf -- '- **Ref:** %s\n' "${REPO_REF:-(default branch)}"
        printf -- '- **Commit before:** %s\n' "${commit_before:-(none)}"
        printf -- '- **Commit after:** %s\n' "${commit_after:-(none)}"
        printf -- '- **Codex:** %s\n' "${codex_version:-(not run)}"
        printf -- '- **Tokens:** %s\n' "$(token_usage)"
        printf '\n## Final message\n\n'
        if [ -s "$OUT/last-message.md" ]; then cat "$OUT/last-message.md"; else printf '(none)\n'; fi
        printf '\n## Files changed\n\n'
        if [ -n "$commit_before" ] && [ -d "$repo/.git" ]; then
            local changes
            changes=$(cd "$repo" && { git diff --stat "$commit_before" --; git status --porcelain; } 2>/dev/null)
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
    write_summary "${repo:-}"
    write_exit_json "$code"
    log "finished: $state${reason:+ ($reason)}"
    exit "$code"
}

fail() { reason=$2; log "error: $reason"; finish "$1"; }

# -- 1-2. inputs and outputs --------------------------------------------------------------
if ! mkdir -p "$OUT" 2>/dev/null || [ ! -w "$OUT" ]; then
    echo "watcherd-worker: $OUT is not writable by uid $(id -u)" >&2
    exit $EX_USAGE
fi
: >"$OUT/run.log"
log "watcherd worker starting as uid $(id -u)"
[ -n "${REPO_URL:-}" ] || fail $EX_USAGE "REPO_URL is required"
[ -n "${PROMPT:-}" ] || fail $EX_USAGE "PROMPT is required"
case "$REPO_URL" in -*) fail $EX_USAGE "REPO_URL must not start with '-'" ;; esac
REPO_DIR=${REPO_DIR:-repo}
case "$REPO_DIR" in
    */* | . | .. | -* | .* | "") fail $EX_USAGE "REPO_DIR must be one folder name" ;;
esac
case "${CODEX_MODE:-exec}" in exec | review) ;; *) fail $EX_USAGE "CODEX_MODE must be exec or review" ;; esac
repo="/work/$REPO_DIR"
safe_url=$(printf '%s' "$REPO_URL" | redact)

# -- 3. clone, or update an existing clone ------------------------------------------------
git config --global --add safe.directory "$repo"
git config --global advice.detachedHead false

git_failed() { # classify git's stderr: network trouble is transient, the rest is not
    if grep -qiE 'could not resolve|connection (refused|reset|timed out)|timed out|failed to connect|network is unreachable|temporary failure|early eof|the remote end hung up|HTTP 5[0-9][0-9]|returned error: 5[0-9][0-9]' "$1"; then
        fail $EX_TEMPFAIL "network failure while $2 $safe_url (will be retried)"
    fi
    fail $EX_REPO "could not $2 $safe_url: $(grep -iE 'fatal|error' "$1" | tail -n 1 | redact)"
}

errors=$(mktemp)
if [ -d "$repo/.git" ]; then
    if [ "$(git -C "$repo" remote get-url origin 2>/dev/null)" != "$REPO_URL" ]; then
        fail $EX_REPO "$repo holds a clone of another repository"
    fi
    # Policy: a previous run's uncommitted changes never block this run. They are
    # saved as a patch in out/, then the clone is reset to the requested ref.
    if [ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]; then
        git -C "$repo" add -A >/dev/null 2>&1
        git -C "$repo" diff --cached --binary >"$OUT/previous-changes.patch" 2>/dev/null
        git -C "$repo" reset -q --hard && git -C "$repo" clean -qfdx
        log "saved the previous run's uncommitted changes to out/previous-changes.patch"
    fi
    log "fetching $safe_url into $repo"
    git -C "$repo" fetch --prune --tags origin '+refs/heads/*:refs/remotes/origin/*' 2>"$errors" \
        || git_failed "$errors" "fetch"
    git -C "$repo" remote set-head origin --auto >/dev/null 2>&1 || true
else
    log "cloning $safe_url into $repo"
    git clone --no-checkout -- "$REPO_URL" "$repo" 2>"$errors" || git_failed "$errors" "clone"
fi
cat "$errors" >>"$OUT/run.log"

# -- 4. check out the requested ref (branch, tag or commit), or the default branch -------
ref=${REPO_REF:-}
cd "$repo" || fail $EX_SOFTWARE "cannot enter $repo"
if [ -z "$ref" ]; then
    target=$(git rev-parse -q --verify 'refs/remotes/origin/HEAD^{commit}')
elif target=$(git rev-parse -q --verify "refs/remotes/origin/$ref^{commit}"); then :
elif target=$(git rev-parse -q --verify "refs/tags/$ref^{commit}"); then :
elif git fetch -q origin "$ref" 2>>"$OUT/run.log" && target=$(git rev-parse -q --verify "FETCH_HEAD^{commit}"); then :
else
    target=$(git rev-parse -q --verify "$ref^{commit}" 2>/dev/null)
fi
[ -n "$target" ] || fail $EX_REF "ref '${ref:-default branch}' not found in $safe_url"
if [ -n "$ref" ] && git rev-parse -q --verify "refs/remotes/origin/$ref" >/dev/null; then
    git checkout -q -B "$ref" "$target" 2>>"$OUT/run.log" || fail $EX_REF "cannot check out $ref"
else
    git checkout -q --detach "$target" 2>>"$OUT/run.log" || fail $EX_REF "cannot check out ${ref:-$target}"
fi
git clean -qfdx
commit_before=$(git rev-parse HEAD)
log "checked out ${ref:-default branch} at $commit_before"

# -- 5. run Codex ---------------------------------------------------------------------------
codex_version=$(codex --version 2>/dev/null | awk '{print $NF}')
# The container is the sandbox (read-only root, no capabilities, only this job's
# folders): Codex's own bubblewrap sandbox cannot run under Docker's seccomp profile.
# Credentials stay out of the commands the agent runs (Codex itself still reads them).
args=(--json --output-last-message "$OUT/last-message.md"
      --dangerously-bypass-approvals-and-sandbox --skip-git-repo-check --color never
      -c shell_environment_policy.ignore_default_excludes=false
      -c 'shell_environment_policy.exclude=["*KEY*","*SECRET*","*TOKEN*","*PASSWORD*"]')
[ -n "${CODEX_MODEL:-}" ] && args+=(--model "$CODEX_MODEL")
if [ -n "${CODEX_FLAGS:-}" ]; then
    # xargs splits like a shell (quotes, backslashes) without running anything.
    mapfile -d '' extra < <(printf '%s' "$CODEX_FLAGS" | xargs printf '%s\0') \
        || fail $EX_USAGE "CODEX_FLAGS cannot be split"
    args+=("${extra[@]}")
fi
subcommand=()
[ "${CODEX_MODE:-exec}" = review ] && subcommand=(review)

log "running codex ${CODEX_MODE:-exec} ($codex_version)"
rm -f "$OUT/last-message.md"
# stdin from /dev/null: an open stdin makes `codex exec` wait for more prompt.
codex exec "${args[@]}" "${subcommand[@]}" "$PROMPT" </dev/null \
    > >(tee "$OUT/events.jsonl") 2> >(tee -a "$OUT/run.log" >&2)
codex_status=$?
wait
commit_after=$(git rev-parse HEAD 2>/dev/null)

if [ "$codex_status" -ne 0 ]; then
    detail=$(jq -r 'select(.type == "error" or .type == "turn.failed")
        | (.message // .error.message // empty)' "$OUT/events.jsonl" 2>/dev/null | tail -n 1)
    fail $EX_CODEX "codex exited with code $codex_status${detail:+: $detail}"
fi
reason="codex finished"
finish 0
