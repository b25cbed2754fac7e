/* keygate/tls.h - TLS on the listeners: the certificate and key pair, swapped
 * on SIGHUP without restarting a listener.
 *
 * libmicrohttpd does the TLS (GnuTLS); this module only owns the pair it
 * presents. Both listeners (public loops, admin thread) ask for the current
 * pair through one certificate callback at every handshake, so a SIGHUP
 * that loads a renewed pair changes what new handshakes present while
 * established connections keep the pair they negotiated. A renewed pair that
 * fails to load is logged and the old one keeps serving.
 *
 * GnuTLS's certificate callback carries no user pointer, so there is at most
 * one struct kg_tls per process (the daemon's). Pairs that a reload replaced
 * are kept until kg_tls_free(): a handshake that took a pair a moment before
 * may still be using it, and a renewal every few weeks costs a few KiB.
 *
 * The checks are shared with the config module, which calls them so that
 * `keygate serve -t` and startup report a bad file as "file:line: ...".
 */
#ifndef KEYGATE_TLS_H
#define KEYGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <microhttpd.h>
#include "keygate/config.h"
#include "keygate/status.h"

/* tls_priorities when the config says nothing: TLS 1.2 and 1.3 only. */
#define KG_TLS_DEFAULT_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Entries kg_tls_mhd_options() may write, MHD_OPTION_END included. */
#define KG_TLS_MHD_OPTIONS 3

struct kg_tls;

/* Whether prio is a priority string GnuTLS accepts. KG_EINVAL with the
 * offending part in err otherwise. Pure; any thread. */
enum kg_status kg_tls_check_priorities(const char *prio, struct kg_err *err);

/* Loads the PEM certificate chain in cert_file and the PEM private key in
 * key_file (unencrypted) and checks that the key belongs to the first
 * certificate. KG_EIO when a file cannot be read, KG_EINVAL when it holds
 * no certificate or key or they do not match; err names the file. */
enum kg_status kg_tls_check_pair(const char *cert_file, const char *key_file, struct kg_err *err);

/* Whether file holds at least one PEM certificate (an upstream_ca bundle).
 * KG_EIO unreadable, KG_EINVAL no certificate. */
enum kg_status kg_tls_check_ca(const char *file, struct kg_err *err);

/* The daemon's TLS state from cfg's tls_certificate and tls_key: *out is
 * NULL (and KG_OK) when TLS is off. Fails when the pair does not load or
 * another struct kg_tls is alive. cfg is only read during the call. */
enum kg_status kg_tls_new(const struct kg_config *cfg, struct kg_tls **out, struct kg_err *err);

/* After every listener using it has stopped. NULL-safe. */
void kg_tls_free(struct kg_tls *tls);

/* Re-reads the certificate and key files named by cfg (the config now in
 * force, which may be a reloaded one) and makes the new pair current for new
 * handshakes; when the files hold the same bytes as the current pair's, the
 * current pair stays and *changed (may be NULL) is false. On failure nothing
 * changes. Main thread. */
enum kg_status kg_tls_reload(struct kg_tls *tls, const struct kg_config *cfg, bool *changed,
                             struct kg_err *err);

/* How many pairs tls holds: the current one and every one it replaced
 * (they live until kg_tls_free). */
size_t kg_tls_pairs_held(const struct kg_tls *tls);

/* What SIGHUP does for TLS: kg_tls_reload(), then one log line saying which
 * certificate now serves or why the old one still does. NULL-safe (TLS off). */
void kg_tls_reload_on_signal(struct kg_tls *tls, const struct kg_config *cfg);

/* libmicrohttpd flag for a listener: MHD_USE_TLS, or 0 when tls is NULL. */
unsigned int kg_tls_mhd_flags(const struct kg_tls *tls);

/* Fills opts (KG_TLS_MHD_OPTIONS entries) with the certificate callback
 * and tls_priorities, ended by MHD_OPTION_END; only the end when tls is
 * NULL. Returns opts, for MHD_OPTION_ARRAY. The priority string is borrowed
 * from the kg_tls, which must outlive the listener. */
struct MHD_OptionItem *kg_tls_mhd_options(const struct kg_tls *tls, struct MHD_OptionItem *opts);

/* "sha256//BASE64" of the public key (SubjectPublicKeyInfo) of the first
 * certificate in cert_file, as libcurl's CURLOPT_PINNEDPUBLICKEY wants it:
 * how `keygate healthcheck` recognises its own daemon on loopback. */
enum kg_status kg_tls_pin(const char *cert_file, char *out, size_t cap, struct kg_err *err);

#endif
