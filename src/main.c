/* main.c - argv dispatch only: every verb, `serve` included, is a row of the
 * verb table in cli/cli.c. Nothing else belongs here, so the library the
 * tests link is the whole program. */
#include "keygate/cli.h"

int
main(int argc, char **argv)
{
    return kg_cli_main(argc, argv);
}
