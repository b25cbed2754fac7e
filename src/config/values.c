/* config/values.c - what a good value of a one-value directive looks like:
 * listen and upstream addresses, paths keygate answers itself, slugs and
 * scope lists, the signup role, the key prefix, and the words of every
 * choice (mode, error_style, log_level, log_format, ratelimit_headers).
 * Each check is a pure function of the value; the directive table in
 * config.c names them, and the loader says "file:line: …" when one fails.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_int.h"
#include "keygate/config.h"
#include "keygate/log.h"
#include "keygate/redislimit.h"

/* RFC 9110 tchar: what a method or a header name may be made of. */
static bool
is_tchar(int c)
{
    return c != '\0' && (isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

bool
kg_cfg_is_token(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (!is_tchar((unsigned char)*s))
            return false;
    }
    return true;
}

/* Reads a port of exactly len characters, all digits, 1..65535. */
static bool
parse_port(const char *s, size_t len, int *out)
{
    int port = 0;

    if (len == 0 || len > 5)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        port = port * 10 + (s[i] - '0');
    }
    if (port < 1 || port > 65535)
        return false;
    *out = port;
    return true;
}

bool
kg_config_addr_parse(const char *addr, char *host, size_t hostlen, int *port)
{
    char buf[KG_ADDR_HOST_MAX], bin[16];
    const char *h, *portstr, *numeric = buf;
    size_t hl;
    bool v6 = false;
    int p;

    if (addr == NULL)
        return false;
    if (addr[0] == '[') {
        const char *closing = strchr(addr, ']');

        if (closing == NULL || closing[1] != ':')
            return false;
        h = addr + 1;
        hl = (size_t)(closing - h);
        portstr = closing + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(addr, ':');

        if (colon == NULL)
            return false;
        h = addr;
        hl = (size_t)(colon - addr);
        portstr = colon + 1;
        /* An unbracketed IPv6 literal cannot be told from its port. */
        if (memchr(h, ':', hl) != NULL)
            return false;
    }
    if (hl == 0 || hl >= sizeof(buf) || !parse_port(portstr, strlen(portstr), &p))
        return false;
    memcpy(buf, h, hl);
    buf[hl] = '\0';
    if (v6) {
        if (inet_pton(AF_INET6, buf, bin) != 1)
            return false;
    } else if (strcmp(buf, "*") == 0) {
        numeric = "0.0.0.0";
    } else if (strcmp(buf, "localhost") == 0) {
        /* Pinned to IPv4 so "localhost" never depends on /etc/hosts order. */
        numeric = "127.0.0.1";
    } else if (inet_pton(AF_INET, buf, bin) != 1) {
        return false;
    }
    if (host != NULL) {
        if (strlen(numeric) >= hostlen)
            return false;
        memcpy(host, numeric, strlen(numeric) + 1);
    }
    if (port != NULL)
        *port = p;
    return true;
}

bool
kg_cfg_check_listen(const char *v)
{
    return kg_config_addr_parse(v, NULL, 0, NULL);
}

bool
kg_cfg_check_admin_listen(const char *v)
{
    return strcmp(v, "off") == 0 || kg_cfg_check_listen(v);
}

/* http(s)://HOST[:PORT][/PATH]: a host name, IPv4 or [IPv6], no user:password
 * (it would end up in logs), no query or fragment (the request's own are appended). */
bool
kg_cfg_check_upstream(const char *v)
{
    const char *p, *end, *after;
    int port;

    if (strncasecmp(v, "http://", 7) == 0)
        p = v + 7;
    else if (strncasecmp(v, "https://", 8) == 0)
        p = v + 8;
    else
        return false;
    for (const char *q = v; *q != '\0'; q++) {
        if ((unsigned char)*q <= 0x20 || *q == 0x7f || *q == '?' || *q == '#')
            return false;
    }
    end = p + strcspn(p, "/");
    if (memchr(p, '@', (size_t)(end - p)) != NULL)
        return false;
    if (*p == '[') {
        char buf[KG_ADDR_HOST_MAX], bin[16];
        const char *closing = memchr(p, ']', (size_t)(end - p));
        size_t hl;

        if (closing == NULL)
            return false;
        hl = (size_t)(closing - p - 1);
        if (hl == 0 || hl >= sizeof(buf))
            return false;
        memcpy(buf, p + 1, hl);
        buf[hl] = '\0';
        if (inet_pton(AF_INET6, buf, bin) != 1)
            return false;
        after = closing + 1;
    } else {
        after = p;
        while (after < end && (isalnum((unsigned char)*after) || strchr(".-_", *after) != NULL))
            after++;
        if (after == p)
            return false;
    }
    if (after == end)
        return true;
    if (*after != ':')
        return false;
    return parse_port(after + 1, (size_t)(end - after - 1), &port);
}

bool
kg_cfg_check_path(const char *v)
{
    return v[0] != '\0';
}

/* A path keygate answers itself: compared with the normalised request
 * path, so it must be normalised too or it could never match. */
bool
kg_cfg_check_url_path(const char *v)
{
    size_t n = strlen(v);

    if (v[0] != '/' || n > 256)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];

        if (c <= 0x20 || c >= 0x7f || strchr("?#%*", c) != NULL)
            return false;
    }
    return kg_cfg_pattern_normal(v, n, false);
}

/* console_path: a path like signup_path that ends in '/', since the
 * console's page and API live below it. */
bool
kg_cfg_check_console_path(const char *v)
{
    size_t n = strlen(v);

    return n >= 2 && v[n - 1] == '/' && kg_cfg_check_url_path(v);
}

/* forward_auth_prefix: a path like signup_path, not "/" (it would remove
 * nothing), or "" for none. */
bool
kg_cfg_check_fa_prefix(const char *v)
{
    return v[0] == '\0' || (strcmp(v, "/") != 0 && kg_cfg_check_url_path(v));
}

/* Tenant and tier names: 1..64 of [A-Za-z0-9_.-]. */
bool
kg_cfg_check_slug(const char *v)
{
    size_t n = strlen(v);

    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)v[i]) && strchr("_.-", v[i]) == NULL)
            return false;
    }
    return true;
}

/* "a,b,c": one or more scopes, blanks around commas allowed. */
bool
kg_cfg_check_scope_list(const char *v)
{
    char item[KG_CFG_SCOPE_MAX + 1];
    const char *p = v;

    for (;;) {
        size_t n;

        while (*p == ' ' || *p == '\t')
            p++;
        n = strcspn(p, ",");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == 0 || n > KG_CFG_SCOPE_MAX)
            return false;
        memcpy(item, p, n);
        item[n] = '\0';
        if (!kg_cfg_scope_ok(item))
            return false;
        p += strcspn(p, ",");
        if (*p == '\0')
            return true;
        p++;
    }
}

/* signup_role: "none" (no scope), or a scope list that does not mention
 * "none" (which would read as "nothing" but grant a scope of that name). */
bool
kg_cfg_check_signup_role(const char *v)
{
    const char *p = v;

    if (strcmp(v, KG_SIGNUP_ROLE_NONE) == 0)
        return true;
    if (!kg_cfg_check_scope_list(v))
        return false;
    for (;;) {
        size_t n;

        while (*p == ' ' || *p == '\t')
            p++;
        n = strcspn(p, ",");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == strlen(KG_SIGNUP_ROLE_NONE) && strncmp(p, KG_SIGNUP_ROLE_NONE, n) == 0)
            return false;
        p += strcspn(p, ",");
        if (*p == '\0')
            return true;
        p++;
    }
}

const char *
kg_config_signup_role(const struct kg_config *cfg)
{
    return strcmp(cfg->signup_role, KG_SIGNUP_ROLE_NONE) == 0 ? "" : cfg->signup_role;
}

bool
kg_config_signup_warning(const struct kg_config *cfg, char *buf, size_t cap)
{
    const char *p = kg_config_signup_role(cfg);

    if (!cfg->signup)
        return false;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        const char *s = p;

        while (n > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            n--;
        }
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (n > 0 && s[n - 1] == '*') {
            if (n == 1)
                snprintf(buf, cap,
                         "signup is on and signup_role holds \"*\": every anonymous signup gets "
                         "keys that pass every route rule (set signup_role to none or to the "
                         "scopes a new account needs)");
            else
                snprintf(buf, cap,
                         "signup is on and signup_role holds \"%.*s\": every anonymous signup "
                         "gets every scope starting with %.*s (set signup_role to none or to the "
                         "scopes a new account needs)",
                         (int)n, s, (int)(n - 1), s);
            return true;
        }
        p += strcspn(p, ",");
        if (*p == ',')
            p++;
    }
    return false;
}

bool
kg_config_prefix_ok(const char *prefix)
{
    size_t n;

    if (prefix == NULL)
        return false;
    n = strlen(prefix);
    if (n < 1 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)prefix[i]) && prefix[i] != '_')
            return false;
    }
    return true;
}

bool
kg_cfg_choose_error_style(const char *v, int *out)
{
    if (strcasecmp(v, "detail") == 0)
        *out = KG_STYLE_DETAIL;
    else if (strcasecmp(v, "error") == 0)
        *out = KG_STYLE_ERROR;
    else
        return false;
    return true;
}

/* limits: "local", or a Redis URL limit/redislimit.c can use. */
bool
kg_cfg_check_limits(const char *v)
{
    return strcmp(v, "local") == 0 || kg_redislimit_parse_url(v, NULL, 0, NULL, NULL);
}

bool
kg_cfg_choose_limits_on_error(const char *v, int *out)
{
    if (strcmp(v, "closed") == 0)
        *out = KG_LIMITS_CLOSED;
    else if (strcmp(v, "open") == 0)
        *out = KG_LIMITS_OPEN;
    else
        return false;
    return true;
}

bool
kg_cfg_choose_credits_mode(const char *v, int *out)
{
    if (strcmp(v, "shared") == 0)
        *out = KG_CREDITS_SHARED;
    else if (strcmp(v, "strict") == 0)
        *out = KG_CREDITS_STRICT;
    else
        return false;
    return true;
}

bool
kg_cfg_choose_mode(const char *v, int *out)
{
    if (strcmp(v, "proxy") == 0)
        *out = KG_MODE_PROXY;
    else if (strcmp(v, "forward_auth") == 0)
        *out = KG_MODE_FORWARD_AUTH;
    else
        return false;
    return true;
}

bool
kg_cfg_choose_log_level(const char *v, int *out)
{
    enum kg_log_level level;

    if (!kg_log_level_parse(v, &level))
        return false;
    *out = (int)level;
    return true;
}

bool
kg_cfg_choose_log_format(const char *v, int *out)
{
    if (strcasecmp(v, "text") == 0)
        *out = KG_LOG_TEXT;
    else if (strcasecmp(v, "json") == 0)
        *out = KG_LOG_JSON;
    else
        return false;
    return true;
}

bool
kg_cfg_choose_rl_headers(const char *v, int *out)
{
    if (strcmp(v, "standard") == 0)
        *out = KG_RLH_STANDARD;
    else if (strcmp(v, "legacy") == 0)
        *out = KG_RLH_LEGACY;
    else
        return false;
    return true;
}
