/* keygate/signup.h - self-service accounts (the Avala v2 signup call).
 *
 * The one way to get a key without holding one: an e-mail address and a
 * password become a user of the signup tenant (config signup_tenant) with
 * the signup role and tier, and its first key, written in one store
 * transaction with its audit entry (actor "signup"). The password is hashed
 * with Argon2id (crypto_pwhash_str, OPSLIMIT/MEMLIMIT_INTERACTIVE: about
 * 64 MiB and tens of milliseconds), so kg_signup_create() must run off the
 * event loops. Neither the password nor the key is ever logged or put in an
 * error message.
 *
 * Errors: KG_EINVAL with words that start with the field ("email …",
 * "password …", "first_name …"); KG_ECONFLICT "email is already
 * registered"; KG_ENOTFOUND when the signup tenant does not exist (a
 * configuration problem, not the client's); store errors pass through.
 */
#ifndef KEYGATE_SIGNUP_H
#define KEYGATE_SIGNUP_H

#include <stdint.h>
#include "keygate/accounts.h"
#include "keygate/json_io.h"
#include "keygate/keys.h"
#include "keygate/status.h"
#include "keygate/store.h"

/* What a client sent; strings borrowed. */
struct kg_signup_req {
    const char *email;      /* required */
    const char *password;   /* required */
    const char *first_name; /* NULL = "" */
    const char *last_name;  /* NULL = "" */
};

/* The members a signup body may hold ("email", "password" required;
 * "first_name", "last_name" optional, null allowed), as a kg_json_io_decode()
 * table filling req: writes KG_SIGNUP_FIELDS entries into out and returns
 * how many. One table for the front end and the fuzz target. */
#define KG_SIGNUP_FIELDS 4
size_t kg_signup_fields(struct kg_signup_req *req, struct kg_jfield out[KG_SIGNUP_FIELDS]);

/* Checks the request without a store: e-mail shape (the accounts core's
 * rule), password (kg_accounts_check_password()), names. Cheap: an edge may call it before
 * queueing. */
enum kg_status kg_signup_check(const struct kg_signup_req *req, struct kg_err *err);

/* Creates the account: checks req, hashes the password, makes the user
 * (username = the e-mail, lower-cased) in kc->cfg->signup_tenant with
 * signup_role (none: a role without any scope) and signup_tier, and its
 * first key named "signup" with no scopes (so it has exactly the role's
 * power), in one transaction. On KG_OK
 * *user_out and *key_out hold the stored records and *secret_out the full
 * key (sodium_malloc'd; kg_keys_key_free() it). */
enum kg_status kg_signup_create(const struct kg_keys_ctx *kc, const struct kg_signup_req *req,
                                int64_t now, struct kg_user_rec *user_out,
                                struct kg_key_rec *key_out, char **secret_out, struct kg_err *err);

#endif
