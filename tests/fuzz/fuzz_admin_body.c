/* Fuzz target: the admin API body decoders (util/json_io.c) and the
 * checks the manage/ core makes on what they decode. Input: one byte per
 * member of the table below (bit 0 required, bit 1 nullable, bit 2 left out
 * of the table) for as many members as there are, then the body.
 *
 * Every admin endpoint decodes its body with kg_json_io_decode() and a
 * table of some of these members, with these types (routes_keys.c,
 * routes_accounts.c); the flag bytes let the fuzzer reach every endpoint's
 * combination, and more. What decodes is then handed to the same checks
 * the handlers reach before the store: kg_keys_check_new(),
 * kg_accounts_user_check_new(), the tenant and tier checks, e-mail
 * normalisation and the rotation grace duration. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "keygate/accounts.h"
#include "keygate/json_io.h"
#include "keygate/keys.h"
#include "keygate/timeutil.h"

#define NOW 1795000000

enum {
    M_NAME,
    M_SCOPES,
    M_USER,
    M_TENANT,
    M_EXPIRES,
    M_RATE,
    M_RATE_BURST,
    M_QUOTA_LIMIT,
    M_QUOTA_PERIOD,
    M_GRACE,
    M_USERNAME,
    M_EMAIL,
    M_FIRST_NAME,
    M_LAST_NAME,
    M_ROLE,
    M_TIER,
    M_PLATFORM_ADMIN,
    M_DISABLED,
    M_DISPLAY_NAME,
    M_N
};

static const struct {
    const char *name;
    enum kg_jtype type;
} members[M_N] = {
    [M_NAME] = {"name", KG_JSTRING},
    [M_SCOPES] = {"scopes", KG_JSCOPES},
    [M_USER] = {"user", KG_JSTRING},
    [M_TENANT] = {"tenant", KG_JSTRING},
    [M_EXPIRES] = {"expires", KG_JSTRING},
    [M_RATE] = {"rate", KG_JSTRING},
    [M_RATE_BURST] = {"rate_burst", KG_JINT},
    [M_QUOTA_LIMIT] = {"quota_limit", KG_JINT},
    [M_QUOTA_PERIOD] = {"quota_period", KG_JSTRING},
    [M_GRACE] = {"grace", KG_JSTRING},
    [M_USERNAME] = {"username", KG_JSTRING},
    [M_EMAIL] = {"email", KG_JSTRING},
    [M_FIRST_NAME] = {"first_name", KG_JSTRING},
    [M_LAST_NAME] = {"last_name", KG_JSTRING},
    [M_ROLE] = {"role", KG_JSCOPES},
    [M_TIER] = {"tier", KG_JSTRING},
    [M_PLATFORM_ADMIN] = {"platform_admin", KG_JBOOL},
    [M_DISABLED] = {"disabled", KG_JBOOL},
    [M_DISPLAY_NAME] = {"display_name", KG_JSTRING},
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *str[M_N] = {0};
    char scopes[M_N][KG_SCOPES_MAX];
    int64_t ints[M_N] = {0};
    bool bools[M_N] = {0}, present[M_N] = {0}, is_null[M_N] = {0};
    struct kg_jfield fields[M_N];
    size_t nfields = 0;
    struct kg_err err = {{0}};
    json_t *root = NULL;

    if (size < M_N)
        return 0;
    for (size_t i = 0; i < M_N; i++) {
        if (data[i] & 4)
            continue;
        void *out = members[i].type == KG_JSTRING   ? (void *)&str[i]
                    : members[i].type == KG_JSCOPES ? (void *)scopes[i]
                    : members[i].type == KG_JINT    ? (void *)&ints[i]
                                                    : (void *)&bools[i];
        scopes[i][0] = '\0';
        fields[nfields++] = (struct kg_jfield){.name = members[i].name,
                                               .type = members[i].type,
                                               .required = (data[i] & 1) != 0,
                                               .nullable = (data[i] & 2) != 0,
                                               .out = out,
                                               .present = &present[i],
                                               .is_null = &is_null[i]};
    }
    if (kg_json_io_decode((const char *)data + M_N, size - M_N, fields, nfields, &root, &err) !=
        KG_OK) {
        if (err.msg[0] == '\0')
            __builtin_trap(); /* every 400 names what is wrong */
        json_decref(root);
        return 0;
    }
    for (size_t i = 0; i < M_N; i++)
        if (present[i] && !is_null[i] && members[i].type == KG_JSTRING && str[i] == NULL)
            __builtin_trap();

    struct kg_key_new kn = {
        .name = str[M_NAME] != NULL ? str[M_NAME] : "k",
        .scopes = present[M_SCOPES] ? scopes[M_SCOPES] : NULL,
        .tenant = str[M_TENANT],
        .expires = str[M_EXPIRES],
        .user = str[M_USER],
        .rate = str[M_RATE],
        .rate_burst = ints[M_RATE_BURST],
        .has_credits = present[M_QUOTA_LIMIT] && !is_null[M_QUOTA_LIMIT],
        .credits = ints[M_QUOTA_LIMIT],
        .refill = str[M_QUOTA_PERIOD],
    };
    (void)kg_keys_check_new(&kn, NOW, &err);
    struct kg_user_new un = {
        .tenant = str[M_TENANT],
        .username = str[M_USERNAME],
        .email = str[M_EMAIL],
        .first_name = str[M_FIRST_NAME],
        .last_name = str[M_LAST_NAME],
        .role = present[M_ROLE] ? scopes[M_ROLE] : NULL,
        .tier = str[M_TIER],
        .platform_admin = bools[M_PLATFORM_ADMIN],
        .has_credits = present[M_QUOTA_LIMIT] && !is_null[M_QUOTA_LIMIT],
        .credits = ints[M_QUOTA_LIMIT],
        .refill = str[M_QUOTA_PERIOD],
    };
    (void)kg_accounts_user_check_new(&un, &err);
    if (str[M_NAME] != NULL)
        (void)kg_accounts_check_tenant(str[M_NAME], &err);
    if (str[M_TIER] != NULL)
        (void)kg_accounts_check_tier(str[M_TIER], &err);
    if (str[M_EMAIL] != NULL) {
        char email[KG_EMAIL_MAX];

        (void)kg_accounts_normalise_email(str[M_EMAIL], email, &err);
    }
    if (str[M_GRACE] != NULL) {
        int64_t grace;

        (void)kg_time_parse_duration(str[M_GRACE], &grace, &err);
    }
    json_decref(root);
    return 0;
}
