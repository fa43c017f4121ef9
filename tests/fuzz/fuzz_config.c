/*
 * fuzz_config.c - configuration files (inih underneath) and TESSERA_* variables.
 *
 * Input: the text of a config file, written to a temporary file and loaded
 * with config_load; its lines that start with "TESSERA_" are also passed as
 * the environment. Invariants: an error names where it came from; a load that
 * succeeds leaves every limit inside its bounds (validated).
 */
#include "app/runtime.h"
#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "fuzz.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int fd;

    (void)argc;
    (void)argv;
    config_add_check(runtime_check_config); /* as the command line does: the shard list too */
    snprintf(path, sizeof(path), "/tmp/fuzz-config-%d.ini", (int)getpid());
    fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    if (fd >= 0)
        close(fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    char *env[9] = {NULL};
    size_t nenv = 0;
    char *text;
    struct config cfg;
    int fd, rc;

    if (size > 16384)
        return 0;
    if (path[0] == '\0')
        LLVMFuzzerInitialize(NULL, NULL);
    fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    close(fd);

    text = fuzz_cstr(data, size);
    for (char *line = strtok(text, "\n"); line != NULL && nenv < 8; line = strtok(NULL, "\n")) {
        if (strncmp(line, "TESSERA_", 8) == 0)
            env[nenv++] = line;
    }
    config_init(&cfg);
    rc = config_load(&cfg, path, env, NULL, 0, err, sizeof(err));
    if (rc != OK) {
        fuzz_check(rc == E_INVALID);
        fuzz_check(err[0] != '\0');
    } else {
        fuzz_check(cfg.limits.max_upload_bytes > 0);
        fuzz_check(cfg.limits.max_list >= 1);
    }
    config_release(&cfg);
    free(text);
    return 0;
}
