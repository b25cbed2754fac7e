/* keygate/reload.h - what a configuration reload (SIGHUP) may change.
 *
 * Most directives are read per request from the config the request holds
 * (keygate/cfgswap.h), so a new config changes them for new requests. A few
 * only act at startup: they bind sockets, open files, start threads or size
 * tables. A reload never half-applies one of those: the new config gets the
 * running value back and the operator is told a restart is needed.
 * Pure (no I/O, no globals); any thread.
 */
#ifndef KEYGATE_RELOAD_H
#define KEYGATE_RELOAD_H

#include <stddef.h>
#include "keygate/config.h"
#include "keygate/status.h"

/* For each startup-only directive (listen, admin_listen, database,
 * secret_file, workers, client_timeout, max_header_bytes, signup and the
 * signup_* settings, auth_throttle, TLS on or off, tls_priorities) whose
 * value in next differs from
 * running: reports "NAME: changed to NEW; needs a restart, keeping OLD"
 * through report (may be NULL) and copies running's value into next.
 * next is the caller's, not yet published. *kept (may be NULL) gets how
 * many directives were kept. KG_ENOMEM: next is partly restored and must
 * be freed, not published. */
enum kg_status kg_reload_keep_startup_values(const struct kg_config *running,
                                             struct kg_config *next, kg_config_report_fn report,
                                             void *ctx, size_t *kept);

#endif
