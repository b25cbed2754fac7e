/* Fuzz target: the signup body (http/front.c's field table, util/json_io.c,
 * manage/signup.c). Input: the POST body. It is decoded with the table
 * signup uses (kg_signup_fields()) and checked with kg_signup_check(), the
 * whole of signup short of hashing the password and the store. */
#include "fuzz.h"
#include "keygate/json_io.h"
#include "keygate/signup.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kg_signup_req rq = {0};
    struct kg_jfield fields[KG_SIGNUP_FIELDS];
    struct kg_err err = {{0}};
    json_t *root = NULL;
    size_t n = kg_signup_fields(&rq, fields);

    if (kg_json_io_decode((const char *)data, size, fields, n, &root, &err) == KG_OK) {
        if (rq.email == NULL || rq.password == NULL)
            __builtin_trap(); /* both are required */
        if (kg_signup_check(&rq, &err) != KG_OK && err.msg[0] == '\0')
            __builtin_trap();
    } else if (err.msg[0] == '\0') {
        __builtin_trap();
    }
    json_decref(root);
    return 0;
}
