/* trimlm.c — command-line entry point (subcommands are added in tools/cmd_*.c). */
#include <stdio.h>

#include "trimlm.h"

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("trimlm %s\n", TLM_VERSION_STRING);
    return 0;
}
