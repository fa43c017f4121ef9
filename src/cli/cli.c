/*
 * cli.c - the command line: global options, configuration, subcommand dispatch.
 *
 * Every subcommand takes --config FILE and --section.key=value flags; the
 * configuration is loaded and validated before any role starts.
 */
#include "cli/cli.h"

#include "app/runtime.h"
#include "cli/backup.h"
#include "cli/client.h"
#include "cli/gc.h"
#include "cli/migrate.h"
#include "cli/repair.h"
#include "cli/ring.h"
#include "cli/sign.h"
#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "services/serve.h"
#include "services/storage.h"
#include "services/worker.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

#define CLI_MAX_FLAGS 128

typedef int cli_cmd_fn(const struct config *cfg, int argc, char **argv);

struct cli_cmd {
    const char *name;
    cli_cmd_fn *run;
    const char *summary;
};

static int cmd_serve(const struct config *cfg, int argc, char **argv);
static int cmd_read(const struct config *cfg, int argc, char **argv);
static int cmd_write(const struct config *cfg, int argc, char **argv);
static int cmd_config(const struct config *cfg, int argc, char **argv);
static int cmd_version(const struct config *cfg, int argc, char **argv);

static const struct cli_cmd cli_cmds[] = {
    {"serve", cmd_serve, "single node: read + write + worker on SQLite and local directories"},
    {"read", cmd_read, "read service: image bytes, variants, metadata, listings"},
    {"write", cmd_write, "write service: uploads and deletes"},
    {"worker", worker_cmd, "job worker: variants, blob release; --once: until none is due"},
    {"storage", storage_cmd, "storage shard node: blobs by key on local disk (ring member)"},
    {"migrate", migrate_cmd, "apply the embedded schema migrations (PostgreSQL primary or SQLite)"},
    {"ring", ring_cmd, "show, apply, plan, rebalance and simulate the storage ring"},
    {"repair", repair_cmd, "restore missing blob replicas, move hinted copies home, remove strays"},
    {"backup", backup_cmd, "copy the blobs a backup target lacks (incremental; deletes nothing)"},
    {"restore", restore_cmd, "fill a new cluster's empty storage from a backup (metadata first)"},
    {"gc", gc_cmd,
     "collect unreferenced and orphan blobs, stale pins, dead jobs; dry run unless --apply"},
    {"upload", client_cmd, "upload images to a server (--server URL or TESSERA_URL); --json"},
    {"ls", client_cmd, "list a server's images, newest first; --limit N, --json"},
    {"info", client_cmd, "print one image's metadata; --json"},
    {"rm", client_cmd, "delete an image: --token DELETE_TOKEN or --key ADMIN_KEY"},
    {"sign", sign_cmd, "print the signed URL of a transform: sign /i/{id}/t/{ops}.{ext}"},
    {"config", cmd_config, "print the configuration: --defaults, --markdown or the effective one"},
    {"version", cmd_version, "print the version"},
};
#define CLI_N (sizeof(cli_cmds) / sizeof(cli_cmds[0]))

static void cli_usage(FILE *f)
{
    fprintf(f, "usage: tessera COMMAND [--config FILE] [--section.key=value ...] [args]\n\n"
               "commands:\n");
    for (size_t i = 0; i < CLI_N; i++)
        fprintf(f, "  %-10s %s\n", cli_cmds[i].name, cli_cmds[i].summary);
    fprintf(f, "\nshortcuts: --listen HOST:PORT (server.listen), --data-dir DIR "
               "(storage.data_dir)\n"
               "Every setting: `tessera config --defaults`; reference: docs/configuration.md\n");
}

static int cmd_version(const struct config *cfg, int argc, char **argv)
{
    (void)cfg;
    (void)argc;
    (void)argv;
    printf("tessera %s\n", TESSERA_VERSION);
    return 0;
}

static int cmd_config(const struct config *cfg, int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--defaults") == 0)
        config_print_defaults(stdout);
    else if (argc > 1 && strcmp(argv[1], "--markdown") == 0)
        config_print_markdown(stdout);
    else if (argc == 1)
        config_print_effective(cfg, stdout);
    else {
        fprintf(stderr, "usage: tessera config [--defaults | --markdown]\n");
        return 2;
    }
    return 0;
}

static int cmd_read(const struct config *cfg, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "tessera read: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    return service_run(cfg, SERVICE_READ, "read") == OK ? 0 : 1;
}

static int cmd_write(const struct config *cfg, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "tessera write: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    return service_run(cfg, SERVICE_WRITE, "write") == OK ? 0 : 1;
}

static int cmd_serve(const struct config *cfg, int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "tessera serve: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    return serve_run(cfg) == OK ? 0 : 1;
}

/* cli_flag_value takes "--name=value" or "--name value"; returns NULL if absent. */
static const char *cli_flag_value(int argc, char **argv, int *i, const char *arg)
{
    const char *eq = strchr(arg, '=');

    if (eq != NULL)
        return eq + 1;
    if (*i + 1 < argc) {
        (*i)++;
        return argv[*i];
    }
    return NULL;
}

/* cli_shortcut maps a shortcut flag (--listen, --data-dir) to its setting; NULL if a is none. */
static const char *cli_shortcut(const char *a)
{
    static const char *const map[][2] = {{"--listen", "server.listen"},
                                         {"--data-dir", "storage.data_dir"}};

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        size_t n = strlen(map[i][0]);
        if (strncmp(a, map[i][0], n) == 0 && (a[n] == '\0' || a[n] == '='))
            return map[i][1];
    }
    return NULL;
}

static char *cli_join(const char *name, const char *value)
{
    return xasprintf("%s=%s", name, value);
}

int cli_main(int argc, char **argv)
{
    struct config cfg;
    const struct cli_cmd *cmd = NULL;
    const char *config_path = NULL;
    char *flags[CLI_MAX_FLAGS];
    bool owned[CLI_MAX_FLAGS] = {false};
    size_t n_flags = 0;
    char *rest[CLI_MAX_FLAGS];
    int n_rest = 0;
    char err[512];
    const char *v;
    int status = 2;

    config_init(&cfg);
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        cli_usage(argc < 2 ? stderr : stdout);
        status = argc < 2 ? 2 : 0;
        goto out;
    }
    for (size_t i = 0; i < CLI_N; i++) {
        if (strcmp(argv[1], cli_cmds[i].name) == 0)
            cmd = &cli_cmds[i];
    }
    if (cmd == NULL) {
        fprintf(stderr, "tessera: unknown command \"%s\"\n\n", argv[1]);
        cli_usage(stderr);
        goto out;
    }
    if (cmd->run == client_cmd) {
        /* the client takes its own flags (--server, --key, ...) and reads no configuration */
        status = client_cmd(NULL, argc - 1, argv + 1);
        goto out;
    }
    rest[n_rest++] = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (n_flags == CLI_MAX_FLAGS || n_rest >= CLI_MAX_FLAGS - 1) {
            fprintf(stderr, "tessera: too many arguments\n");
            goto out;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli_usage(stdout);
            status = 0;
            goto out;
        }
        if (strncmp(a, "--config", 8) == 0 && (a[8] == '\0' || a[8] == '=')) {
            config_path = cli_flag_value(argc, argv, &i, a);
            if (config_path == NULL) {
                fprintf(stderr, "tessera: --config needs a file\n");
                goto out;
            }
        } else if (strncmp(a, "--", 2) == 0 && strchr(a, '.') != NULL &&
                   (strchr(a, '=') == NULL || strchr(a, '.') < strchr(a, '='))) {
            /* --section.key=value or --section.key value */
            if (strchr(a, '=') != NULL) {
                flags[n_flags++] = (char *)a + 2;
            } else if (i + 1 < argc) {
                owned[n_flags] = true;
                flags[n_flags++] = cli_join(a + 2, argv[i + 1]);
                i++;
            } else {
                fprintf(stderr, "tessera: %s needs a value\n", a);
                goto out;
            }
        } else if ((v = cli_shortcut(a)) != NULL) {
            const char *val = cli_flag_value(argc, argv, &i, a);
            if (val == NULL) {
                fprintf(stderr, "tessera: %s needs a value\n", a);
                goto out;
            }
            owned[n_flags] = true;
            flags[n_flags++] = cli_join(v, val);
        } else {
            rest[n_rest++] = argv[i];
        }
    }
    config_add_check(runtime_check_config);
    if (config_load(&cfg, config_path, environ, flags, n_flags, err, sizeof(err)) != OK) {
        fprintf(stderr, "tessera: configuration: %s\n", err);
        goto out;
    }
    log_min_level = (enum log_level)log_level_parse(cfg.log.level);
    rest[n_rest] = NULL;
    status = cmd->run(&cfg, n_rest, rest);
out:
    for (size_t i = 0; i < n_flags; i++) {
        if (owned[i])
            free(flags[i]);
    }
    config_release(&cfg);
    return status;
}
