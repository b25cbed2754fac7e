/* config/config_int.h - what config.c and rules.c share; nothing outside
 * src/config/ includes this.
 *
 * The directive row and the loader's state, the three ways a loader
 * complains ("file:line: message" to the caller's callback), and the
 * parsers of the rule directives (rules.c) the directive table names.
 */
#ifndef KEYGATE_CONFIG_INT_H
#define KEYGATE_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keygate/config.h"

/* The longest scope word a rule or a role may hold. */
#define KG_CFG_SCOPE_MAX 64

/* More than the directive table holds (config.c asserts it). */
#define KG_CFG_DIRECTIVES_MAX 160

/* Values quoted back in messages are cut here so one silly line cannot
 * drown the rest of the report. */
#define SHOWN "%.80s"

enum kind {
    K_STRING,   /* one value, checked by .check, copied into a char * */
    K_BOOL,     /* one value: on/off, yes/no, true/false */
    K_CHOICE,   /* one value, turned by .choose into an int-sized enum */
    K_DURATION, /* one value: N followed by ms, s, m or h; stored as int64_t ms */
    K_INT,      /* one value: a whole number from .min to .max; stored as int */
    K_BYTES,    /* one value: a whole number, k = 1024, from .min to .max; int64_t */
    K_CUSTOM,   /* all values go to .parse */
};

struct kg_cfg_loader;
struct kg_cfg_directive;

typedef enum kg_status (*kg_cfg_parse_fn)(struct kg_cfg_loader *ld,
                                          const struct kg_cfg_directive *d, const char *const *argv,
                                          size_t argc);

struct kg_cfg_directive {
    const char *name;
    enum kind kind;
    const char *def;  /* built-in default as written in a file; NULL: none */
    size_t off;       /* field in struct kg_config; unused by K_CUSTOM */
    const char *env;  /* KEYGATE_* variable that overrides it, or NULL */
    const char *want; /* what a good value looks like (K_STRING, K_CHOICE, K_CUSTOM) */
    bool (*check)(const char *value);
    bool (*choose)(const char *value, int *out);
    kg_cfg_parse_fn parse;
    int64_t min, max;
    bool multi; /* may appear on several lines */
};

/* State of one kg_config_load(): where we are, for messages, and what we found. */
struct kg_cfg_loader {
    struct kg_config *cfg;
    const char *file;
    int line;        /* 0 when not reading a line */
    const char *env; /* variable being applied, or NULL */
    kg_config_report_fn report;
    void *ctx;
    int nerrors;
    int first_line[KG_CFG_DIRECTIVES_MAX]; /* where each single-valued directive was first seen */
};

void kg_cfg_complain(struct kg_cfg_loader *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Says what d wants instead of value; numeric kinds state their bounds from the row. */
void kg_cfg_complain_want(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                          const char *value);
void kg_cfg_complain_count(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d, size_t argc);

/* ---- cfg_events.c: the issue-18 directives ---- */

enum kg_status kg_cfg_parse_webhook(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                    const char *const *argv, size_t argc);
enum kg_status kg_cfg_parse_alert(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                  const char *const *argv, size_t argc);
bool kg_cfg_choose_leak_action(const char *v, int *out);
void kg_cfg_webhooks_free(struct kg_config *cfg);

/* ---- values.c: checks of one value, named by the directive table ---- */

bool kg_cfg_check_listen(const char *v);
bool kg_cfg_check_admin_listen(const char *v);
bool kg_cfg_check_upstream(const char *v);
bool kg_cfg_check_path(const char *v);
bool kg_cfg_check_url_path(const char *v);
bool kg_cfg_check_fa_prefix(const char *v);
bool kg_cfg_check_scope_list(const char *v);
bool kg_cfg_check_signup_role(const char *v);
bool kg_cfg_check_console_path(const char *v);
bool kg_cfg_choose_error_style(const char *v, int *out);
bool kg_cfg_choose_mode(const char *v, int *out);
bool kg_cfg_choose_log_level(const char *v, int *out);
bool kg_cfg_choose_log_format(const char *v, int *out);
bool kg_cfg_choose_rl_headers(const char *v, int *out);

/* An HTTP token (RFC 9110 tchar+), such as a method or a header name. */
bool kg_cfg_is_token(const char *s);
/* 1 to 64 of A-Z a-z 0-9 _ . - (tenants, tiers). */
bool kg_cfg_check_slug(const char *v);
bool kg_cfg_check_limits(const char *v);
bool kg_cfg_choose_limits_on_error(const char *v, int *out);
bool kg_cfg_choose_credits_mode(const char *v, int *out);

/* ---- rules.c ---- */

/* A scope word: 1 to 64 of A-Z a-z 0-9 _ . : * -. */
bool kg_cfg_scope_ok(const char *s);
/* True when the path s[0..len) (starting with '/') has no "//", "." or ".."
 * segment; with is_prefix, the last segment may hold dots. */
bool kg_cfg_pattern_normal(const char *s, size_t len, bool is_prefix);
void kg_cfg_route_cleanup(struct kg_route *r);
bool kg_cfg_choose_route_case(const char *v, int *out);
bool kg_cfg_choose_upstream_client(const char *v, int *out);
enum kg_status kg_cfg_parse_route(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                  const char *const *argv, size_t argc);
enum kg_status kg_cfg_parse_cost(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                 const char *const *argv, size_t argc);
enum kg_status kg_cfg_parse_default_rate(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                         const char *const *argv, size_t argc);
enum kg_status kg_cfg_parse_tier(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                 const char *const *argv, size_t argc);

/* ---- catalog.c: the console's scope catalogue and tenant policies ---- */

enum kg_status kg_cfg_parse_scope(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                  const char *const *argv, size_t argc);
enum kg_status kg_cfg_parse_tenant(struct kg_cfg_loader *ld, const struct kg_cfg_directive *d,
                                   const char *const *argv, size_t argc);

#endif
