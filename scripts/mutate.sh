#!/usr/bin/env bash
# Mutation check: breaks security- and billing-critical lines of src/ on
# purpose, one at a time, and fails unless the tests notice each one.
#
#   scripts/mutate.sh                 every mutation (builds build-mutate/ with gcc)
#   scripts/mutate.sh ID...           only these
#   scripts/mutate.sh --list          the mutations and the tests that must kill them
#   scripts/mutate.sh --check         only checks that every mutation still applies
#
#   KEYGATE_MUTATE_BUILD=dir          build directory (default build-mutate)
#   KEYGATE_MUTATE_BASELINE=0         skip running the selected tests unmutated first
#                                     (scripts/test.sh: its gcc pass just ran them)
#
# Each mutation names one exact string in one file and what replaces it. The
# string must occur exactly once: when a refactor moves or changes it, the
# script stops with an error instead of silently testing nothing, and the
# list below must be updated. The source is restored after each mutation,
# and on any exit (Ctrl-C included); the script checks it byte for byte.
# Per mutation only keygate and the listed tests are rebuilt and only the
# listed tests run, in order, stopping at the first that fails (the kill).
# A mutation that no listed test kills "survives": the suite has a hole.
# docs/testing.md lists the mutations and the test that kills each.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KEYGATE_MUTATE_BUILD:-build-mutate}

ids=() files=() olds=() news=() tests=()

# mutation ID FILE OLD NEW "TEST..." (first test: the one expected to kill it)
mutation() {
    ids+=("$1") files+=("$2") olds+=("$3") news+=("$4") tests+=("$5")
}

# ---- the promises of issue 19 ----
mutation scope-403-message src/http/respond.c \
    '"API key is missing the required scope %s"' \
    '"Scope %s is required"' \
    'unit_http_test_respond integration_test_answers integration_test_proxy integration_test_forward_auth'
mutation charge-any-status src/http/front.c \
    'status >= 200 && status <= 299)' \
    'status >= 200 && status <= 599)' \
    'integration_test_quota integration_test_tier_quota integration_test_usage integration_test_forward_auth integration_test_proxy'
mutation expired-not-auth-failure src/auth/decide.c \
    'v == KG_DENY_INVALID || v == KG_DENY_EXPIRED;' \
    'v == KG_DENY_INVALID;' \
    'unit_auth_test_decide unit_limit_test_throttle integration_test_throttle integration_test_credentials'
# ---- keys ----
mutation checksum-compare src/auth/keyfmt.c \
    'KG_KEY_CHECK_LEN) == 0;' \
    'KG_KEY_CHECK_LEN - 1) == 0;' \
    'unit_auth_test_keyfmt unit_auth_test_decide'
mutation digest-secret src/auth/digest.c \
    'len, s->bytes,
                       KG_SECRET_BYTES);' \
    'len, s->bytes,
                       0);' \
    'unit_auth_test_digest unit_auth_test_decide'
mutation revoked-boundary src/auth/decide.c \
    'ent->revoked_at <= now' \
    'ent->revoked_at < now' \
    'unit_auth_test_decide integration_test_credentials'
mutation expiry-boundary src/auth/decide.c \
    'ent->expires_at <= now' \
    'ent->expires_at < now' \
    'unit_auth_test_decide integration_test_credentials'
# ---- scopes and roles ----
mutation scope-wildcard src/auth/scope.c \
    'return strncmp(have, need, n - 1) == 0;' \
    'return strncmp(have, need, n - 2) == 0;' \
    'unit_auth_test_scope unit_auth_test_decide'
mutation role-cap src/auth/decide.c \
    'if (out->missing_scope == NULL && !ent->owner->role_all)' \
    'if (out->missing_scope == NULL && ent->owner->role_all)' \
    'unit_auth_test_decide unit_auth_test_roles integration_test_admin_api'
mutation keycache-lookup src/auth/keyindex.c \
    'if (e != TOMB && sodium_memcmp(e->digest, digest, KG_DIGEST_BYTES) == 0) {' \
    'if (e != TOMB && sodium_memcmp(e->digest, digest, KG_DIGEST_BYTES / 2) == 0) {' \
    'unit_auth_test_keycache unit_auth_test_decide'
mutation stat-first-use src/auth/keycache.c \
    'node = stat_lookup(kc, ent->id, h);
    if (node == NULL)
        node = stat_add(kc, ent, h);' \
    'node = stat_add(kc, ent, h);' \
    'unit_auth_test_keycache_sync'
mutation disabled-owner src/auth/keycache.c \
    '|| owner->disabled) {' \
    '|| (owner->disabled && false)) {' \
    'unit_auth_test_keycache integration_test_admin_api integration_test_cli_accounts'
# ---- tenant fence and the admin API ----
mutation tenant-fence-core src/manage/manage_int.h \
    'return fence != NULL && strcmp(fence, tenant) != 0;' \
    'return fence != NULL && tenant == NULL;' \
    'unit_manage_test_accounts unit_manage_test_keys integration_test_admin_api'
mutation tenant-fence-admin src/admin/admin.c \
    'c.fence = c.caller.platform_admin ? NULL : c.caller.tenant;' \
    'c.fence = c.caller.platform_admin || true ? NULL : c.caller.tenant;' \
    'integration_test_admin_api'
mutation admin-platform-only src/admin/admin.c \
    'if (r->platform_only && !c.caller.platform_admin)' \
    'if (r->platform_only && !c.caller.platform_admin && false)' \
    'integration_test_admin_api'
mutation admin-caller-cap src/admin/admin.c \
    'if (c->caller.platform_admin || scopes == NULL)' \
    'if (c->caller.platform_admin || scopes == NULL || true)' \
    'integration_test_admin_api'
mutation admin-throttle-cooling src/admin/admin.c \
    'if (!kg_throttle_cooling(adm->auth_cooldown, ip, now_ms, &retry_ms))' \
    'if (!kg_throttle_cooling(adm->auth_cooldown, ip, now_ms, &retry_ms) || true)' \
    'integration_test_throttle integration_test_admin_api'
# ---- what reaches the upstream ----
mutation hop-by-hop-te src/proxy/headers.c \
    '"Proxy-Connection",   "TE", "Trailer",' \
    '"Proxy-Connection",   "Trailer",' \
    'unit_proxy_test_headers integration_test_proxy'
mutation connection-named src/proxy/headers.c \
    'return conn_tokens != NULL && in_token_list(name, conn_tokens);' \
    'return conn_tokens != NULL && in_token_list(name, conn_tokens) && false;' \
    'unit_proxy_test_headers integration_test_proxy'
mutation credential-strip src/proxy/headers.c \
    'if (!cfg->forward_credentials && kg_credhdr_is_credential(cfg, name, value))' \
    'if (cfg->forward_credentials && kg_credhdr_is_credential(cfg, name, value))' \
    'unit_proxy_test_headers integration_test_proxy integration_test_credentials'
mutation forged-identity src/proxy/headers.c \
    'if (strncasecmp(name, "X-Keygate-", 10) == 0)' \
    'if (strncmp(name, "X-Keygate-", 10) == 0)' \
    'unit_proxy_test_headers integration_test_proxy'
mutation forwarded-for-replaced src/proxy/headers.c \
    '"X-Forwarded-For",' \
    '/* "X-Forwarded-For", */' \
    'unit_proxy_test_headers integration_test_proxy'
mutation proxy-authorization src/proxy/headers.c \
    '"Proxy-Authorization",' \
    '/* "Proxy-Authorization", */' \
    'unit_proxy_test_headers integration_test_proxy integration_test_credentials'
mutation response-hop-by-hop src/proxy/headers.c \
    'return kg_headers_hop_by_hop(name, conn_tokens) || strcasecmp(name, "Content-Length") == 0 ||' \
    'return (kg_headers_hop_by_hop(name, conn_tokens) && false) || strcasecmp(name, "Content-Length") == 0 ||' \
    'unit_proxy_test_headers integration_test_proxy'
# ---- what keygate lets in ----
mutation dot-dot src/http/pathnorm.c \
    "if (slen == 2 && out[start] == '.' && out[start + 1] == '.') {" \
    "if (slen == 2 && out[start] == '.' && out[start + 1] == ',') {" \
    'unit_http_test_pathnorm integration_test_proxy'
mutation cl-and-te src/http/hygiene.c \
    'if (h->n_cl > 0 && h->n_te > 0)' \
    'if (h->n_cl > 0 && h->n_te > 1)' \
    'unit_http_test_hygiene integration_test_hostile'
# ---- the wire checks of issue 11 ----
mutation te-exact-chunked src/http/hygiene.c \
    'if (vlen != 7 || strncasecmp(value, "chunked", 7) != 0)' \
    'if (vlen < 7 || strncasecmp(value, "chunked", 7) != 0)' \
    'unit_http_test_hygiene integration_test_hostile integration_test_desync'
mutation te-http10 src/http/hygiene.c \
    'if (h->n_te > 0 && h->http10)' \
    'if (h->n_te > 0 && h->http10 && false)' \
    'unit_http_test_hygiene integration_test_hostile'
mutation obs-fold src/http/hygiene.c \
    'if (h->folded)' \
    'if (h->folded && false)' \
    'unit_http_test_hygiene integration_test_hostile'
mutation host-grammar src/http/hygiene.c \
    'if (!kg_hygiene_host_ok(value, vlen))' \
    'if (!kg_hygiene_host_ok(value, vlen) && false)' \
    'unit_http_test_hygiene integration_test_hostile'
mutation host-missing src/http/hygiene.c \
    'if (h->n_host == 0 && h->needs_host)' \
    'if (h->n_host == 0 && h->needs_host && false)' \
    'unit_http_test_hygiene integration_test_hostile'
# The raw-bytes guard refuses a blank in the target before front.c's own
# check (kept as a second line of defence, which no request can reach).
mutation target-blank src/http/rawguard.c \
    'else if (s->tgt_bad || s->rl_sp > 1)' \
    'else if (s->tgt_bad || s->rl_sp > 2)' \
    'unit_http_test_rawguard integration_test_hostile'
mutation trace-any-case src/http/front.c \
    'return strcasecmp(m, "TRACE") == 0 ||' \
    'return strcmp(m, "TRACE") == 0 ||' \
    'integration_test_hostile integration_test_proxy'
mutation underscore-drop src/proxy/headers.c \
    "if (strchr(name, '_') != NULL && drop_underscored(cfg, name, value, conn_tokens))" \
    "if (strchr(name, '_') != NULL && drop_underscored(cfg, name, value, conn_tokens) && false)" \
    'unit_proxy_test_headers integration_test_proxy'
mutation underscore-owned src/proxy/headers.c \
    'return keygate_owned(cfg, dashed, value, conn_tokens);' \
    'return false && keygate_owned(cfg, dashed, value, conn_tokens);' \
    'unit_proxy_test_headers integration_test_proxy'
mutation real-ip-untrusted src/proxy/headers.c \
    'if (!trusted_peer && strcasecmp(name, "X-Real-IP") == 0)' \
    'if (trusted_peer && strcasecmp(name, "X-Real-IP") == 0)' \
    'unit_proxy_test_headers integration_test_proxy'
# ---- limits and billing ----
mutation gcra-compare src/limit/gcra.c \
    'bool allowed = next - now <= g->tau_ns;' \
    'bool allowed = next - now < g->tau_ns;' \
    'unit_limit_test_gcra unit_limit_test_limiter integration_test_ratelimit'
mutation lease-denied-until src/limit/lease.c \
    'bool denied = l->tokens == 0 && l->denied_until_us > now_us;' \
    'bool denied = false;' \
    'unit_limit_test_lease'
mutation lease-denied-refill src/limit/lease.c \
    'return l->size > 0 && l->tokens * 2 <= l->size && l->denied_until_us == 0;' \
    'return l->size > 0 && l->tokens * 2 <= l->size;' \
    'unit_limit_test_lease integration_test_shared_limits'
mutation limiter-closed src/auth/gate.c \
    'limiter_closed = cfg->limits_on_error == KG_LIMITS_CLOSED;' \
    'limiter_closed = false;' \
    'unit_auth_test_gate integration_test_shared_limits'
mutation rate-limit-429 src/auth/gate.c \
    '} else if (!out->lv.allowed) {' \
    '} else if (!out->lv.allowed && false) {' \
    'unit_auth_test_gate integration_test_ratelimit integration_test_proxy'
mutation throttle-threshold src/limit/throttle.c \
    'allowed = over <= 0;' \
    'allowed = over <= t->period_ms;' \
    'unit_limit_test_throttle integration_test_throttle integration_test_signup'
mutation throttle-cooling src/auth/gate.c \
    'if (kg_throttle_cooling(env->auth_cooldown, in->client_ip, in->now_ms, &retry_ms)) {' \
    'if (kg_throttle_cooling(env->auth_cooldown, in->client_ip, in->now_ms, &retry_ms) && false) {' \
    'unit_auth_test_gate integration_test_throttle'
mutation quota-boundary src/auth/keycache.c \
    '+ cost <= ent->quota_limit;' \
    '+ cost < ent->quota_limit;' \
    'unit_auth_test_credits unit_auth_test_keycache integration_test_quota'
mutation user-quota-boundary src/auth/keycache.c \
    '+ cost > o->quota_limit)' \
    '+ cost >= o->quota_limit)' \
    'unit_auth_test_credits integration_test_quota'
mutation tier-quota-boundary src/auth/keycache.c \
    '+ cost <= tier->quota;' \
    '+ cost < tier->quota;' \
    'unit_auth_test_credits integration_test_tier_quota'
# ---- logs and audit ----
mutation accesslog-mask-path src/obs/accessfmt.c \
    'str[KG_AL_PATH] = mask_keys(str[KG_AL_PATH], len[KG_AL_PATH], l->masked);' \
    '(void)l->masked;' \
    'unit_obs_test_accessfmt integration_test_accesslog'
mutation accesslog-mask-request-id src/obs/accessfmt.c \
    'str[KG_AL_REQUEST_ID] = mask_keys(str[KG_AL_REQUEST_ID], len[KG_AL_REQUEST_ID], l->masked_id);' \
    '(void)l->masked_id;' \
    'unit_obs_test_accessfmt integration_test_accesslog'
# A line feed a client put in its path written raw: one request forges a second log line.
mutation accesslog-raw-newline src/obs/accessfmt.c \
    '    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */' \
    '    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, /* 0x00 */' \
    'unit_obs_test_accessfmt'
# A quote written raw: a client's path closes the string and adds members of its own.
mutation accesslog-raw-quote src/obs/accessfmt.c \
    "    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '\"' */" \
    "    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '\"' */" \
    'unit_obs_test_accessfmt'
# (KG_AUDIT_HASH_HEX counts the NUL: "- 2" leaves the last hex digit unchecked.)
mutation audit-entry-hash src/manage/audit.c \
    'if (sodium_memcmp(want, e->hash, KG_AUDIT_HASH_HEX) != 0)' \
    'if (sodium_memcmp(want, e->hash, KG_AUDIT_HASH_HEX - 2) != 0)' \
    'unit_manage_test_audit integration_test_cli'

die() {
    echo "mutate.sh: $*" >&2
    exit 2
}

# How many times the literal $2 occurs in the literal $1.
count() {
    local rest=${1//"$2"/}
    echo $(((${#1} - ${#rest}) / ${#2}))
}

read_file() {
    IFS= read -r -d '' "$1" <"$2" || true
}

# Every mutation still applies: exactly one match, and it really changes something.
check_all() {
    local i content n
    for i in "${!ids[@]}"; do
        [[ -f ${files[i]} ]] || die "${ids[i]}: ${files[i]} does not exist (update the list in $0)"
        [[ ${olds[i]} != "${news[i]}" ]] || die "${ids[i]}: the mutation changes nothing"
        read_file content "${files[i]}"
        n=$(count "$content" "${olds[i]}")
        [[ $n == 1 ]] || die "${ids[i]}: ${files[i]} holds the string $n times, want exactly 1" \
            "(a refactor moved it: update the list in $0):" $'\n'"${olds[i]}"
    done
}

if [[ ${1:-} == --list ]]; then
    for i in "${!ids[@]}"; do
        printf '%-26s %-26s %s\n' "${ids[i]}" "${files[i]}" "${tests[i]}"
    done
    exit 0
fi
check_all
if [[ ${1:-} == --check ]]; then
    echo "mutate.sh: all ${#ids[@]} mutations apply"
    exit 0
fi

# Which mutations to run.
sel=()
if [[ $# -eq 0 ]]; then
    sel=("${!ids[@]}")
else
    for want in "$@"; do
        found=
        for i in "${!ids[@]}"; do
            [[ ${ids[i]} == "$want" ]] && sel+=("$i") && found=1
        done
        [[ -n $found ]] || die "no mutation called $want (--list shows them)"
    done
fi

tmp=$(mktemp -d)
applied=
restore() {
    if [[ -n $applied ]]; then
        cat "$tmp/orig" >"$applied"
        if cmp -s "$tmp/orig" "$applied"; then
            applied=
        else
            echo "mutate.sh: COULD NOT RESTORE $applied (the original is in $tmp/orig)" >&2
        fi
    fi
}
on_exit() {
    local rc=$?
    restore
    if [[ -n $applied ]]; then
        rc=1
    else
        rm -rf "$tmp"
    fi
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ctest_one() { # runs one test by exact name; quiet unless asked
    ctest --test-dir "$build" -R "^$1\$" --output-on-failure --timeout 300 >"$tmp/log" 2>&1
}

targets_of() { # keygate plus the test binaries (install_layout etc. have none)
    local t out=(keygate)
    for t in $1; do
        [[ $t == unit_* || $t == integration_* ]] && out+=("$t")
    done
    echo "${out[@]}"
}

start=$(date +%s)
echo "== mutate.sh: ${#sel[@]} mutation(s), build in $build"
if [[ ! -f $build/build.ninja ]]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=gcc >/dev/null
fi
all_tests=$(for i in "${sel[@]}"; do echo "${tests[i]}"; done | tr ' ' '\n' | sort -u | tr '\n' ' ')
# shellcheck disable=SC2046
cmake --build "$build" --target $(targets_of "$all_tests") >/dev/null

if [[ ${KEYGATE_MUTATE_BASELINE:-1} != 0 ]]; then
    for t in $all_tests; do
        ctest_one "$t" || { cat "$tmp/log" >&2; die "baseline: $t fails without any mutation"; }
    done
    echo "   baseline: every selected test passes unmutated ($(($(date +%s) - start)) s)"
fi

survivors=()
for i in "${sel[@]}"; do
    id=${ids[i]} file=${files[i]}
    t0=$(date +%s)
    cp "$file" "$tmp/orig"
    read_file content "$file"
    applied=$file
    printf '%s' "${content/"${olds[i]}"/"${news[i]}"}" >"$file"
    # shellcheck disable=SC2046
    if ! cmake --build "$build" --target $(targets_of "${tests[i]}") >"$tmp/build.log" 2>&1; then
        cat "$tmp/build.log" >&2
        die "$id: the mutated source does not build (fix the mutation in $0)"
    fi
    killer=
    for t in ${tests[i]}; do
        if ! ctest_one "$t"; then
            killer=$t
            break
        fi
    done
    restore
    if [[ -n $killer ]]; then
        printf '   killed    %-26s by %s (%d s)\n' "$id" "$killer" $(($(date +%s) - t0))
    else
        printf '   SURVIVED  %-26s %s passed (%d s)\n' "$id" "${tests[i]}" $(($(date +%s) - t0))
        survivors+=("$id")
    fi
done

# The tree is as it was: rebuild the restored objects so the build dir matches it.
# shellcheck disable=SC2046
cmake --build "$build" --target $(targets_of "$all_tests") >/dev/null
echo "== mutate.sh: ${#sel[@]} mutation(s) in $(($(date +%s) - start)) s," \
    "${#survivors[@]} survived${survivors[*]:+: ${survivors[*]}}"
[[ ${#survivors[@]} -eq 0 ]]
