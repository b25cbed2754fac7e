/* manage/signup.c - self-service accounts: check the request, hash the
 * password with Argon2id, and create the user with its first key through
 * manage/accounts.c in one store transaction (one "signup" audit entry).
 *
 * Owns the password rule and what a signup account is made of (tenant,
 * role and tier from the config, username = e-mail, a first key without
 * scopes, so it can do what the role grants and nothing more: with the
 * default signup_role none, no route that requires a scope); every other
 * rule (e-mail shape, names, uniqueness, disabled tenants) is the accounts
 * core's. Knows nothing about HTTP.
 */
#include <stdbool.h>
#include <string.h>

#include <sodium.h>

#include "keygate/accounts.h"
#include "keygate/audit.h"
#include "keygate/signup.h"

#define FIRST_KEY_NAME "signup"

size_t
kg_signup_fields(struct kg_signup_req *req, struct kg_jfield out[KG_SIGNUP_FIELDS])
{
    out[0] = (struct kg_jfield){
        .name = "email", .type = KG_JSTRING, .required = true, .out = &req->email};
    out[1] = (struct kg_jfield){
        .name = "password", .type = KG_JSTRING, .required = true, .out = &req->password};
    out[2] = (struct kg_jfield){
        .name = "first_name", .type = KG_JSTRING, .nullable = true, .out = &req->first_name};
    out[3] = (struct kg_jfield){
        .name = "last_name", .type = KG_JSTRING, .nullable = true, .out = &req->last_name};
    return KG_SIGNUP_FIELDS;
}

enum kg_status
kg_signup_check(const struct kg_signup_req *req, struct kg_err *err)
{
    struct kg_user_new user = {.email = req->email,
                               .first_name = req->first_name,
                               .last_name = req->last_name,
                               .is_signup = true};
    char email[KG_EMAIL_MAX];
    enum kg_status rc;

    if (req->email == NULL)
        return kg_err_set(err, KG_EINVAL, "email is required");
    rc = kg_accounts_normalise_email(req->email, email, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_accounts_check_password(req->password, err);
    if (rc != KG_OK)
        return rc;
    user.email = email;
    return kg_accounts_user_check_new(&user, err);
}

enum kg_status
kg_signup_create(const struct kg_keys_ctx *kc, const struct kg_signup_req *req, int64_t now,
                 struct kg_user_rec *user_out, struct kg_key_rec *key_out, char **secret_out,
                 struct kg_err *err)
{
    struct kg_keys_ctx sc = *kc;
    struct kg_key_new first = {.name = FIRST_KEY_NAME};
    struct kg_user_new user = {0};
    char email[KG_EMAIL_MAX], hash[KG_PWHASH_MAX];
    struct kg_user_rec existing;
    enum kg_status rc;

    *secret_out = NULL;
    rc = kg_signup_check(req, err);
    if (rc != KG_OK)
        return rc;
    rc = kg_accounts_normalise_email(req->email, email, err);
    if (rc != KG_OK)
        return rc;
    /* Hashing costs 64 MiB and tens of milliseconds: skip it for an address
     * that is taken. The insert below still decides a race. */
    rc = kg_store_user_by_email(kc->store, email, &existing, err);
    if (rc == KG_OK)
        return kg_err_set(err, KG_ECONFLICT, "email is already in use");
    if (rc != KG_ENOTFOUND)
        return rc;
    rc = kg_accounts_hash_password(req->password, hash, err);
    if (rc != KG_OK)
        return rc;

    sc.actor = KG_ACTOR_SIGNUP;
    user.tenant = kc->cfg->signup_tenant;
    user.email = email;
    user.first_name = req->first_name;
    user.last_name = req->last_name;
    user.password_hash = hash;
    user.role = kg_config_signup_role(kc->cfg);
    user.tier = kc->cfg->signup_tier;
    user.is_signup = true;
    rc = kg_accounts_user_create(&sc, NULL, &user, &first, now, user_out, key_out, secret_out, err);
    sodium_memzero(hash, sizeof(hash));
    return rc;
}
