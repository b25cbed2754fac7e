/* keygate/serve.h - the daemon: `keygate serve [-c FILE] [-t]`.
 *
 * Startup order (config -> secret -> store -> key cache -> listeners ->
 * loops), signal handling and drain live in src/server/. main.c hands the
 * arguments after the verb here.
 */
#ifndef KEYGATE_SERVE_H
#define KEYGATE_SERVE_H

/* Runs the serve verb; argv[0] is "serve". Returns the process exit status:
 * 0 clean stop, 1 runtime failure, 2 usage or config error. With -t, checks
 * the config, prints "configuration OK" and returns 0. */
int kg_serve_main(int argc, char **argv);

#endif
