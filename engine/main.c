/*
 * main.c — the `signal` command.
 *
 * The CLI itself is Lua (lua/signal/dev/cli.lua), run in a boot lua_State whose
 * primitives block: one-shot commands (check, dlq) finish there. Commands
 * that serve (run, sandbox, exec) return a plan — entry module, worker count,
 * listen address — and this file starts that many worker threads, then waits
 * for signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads scripts.
 */
#include "l_core.h"
#include "log.h"
#include "server.h"
#include "worker.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <hiredis/hiredis.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>

#ifndef SIGNAL_DEFAULT_HOME
#define SIGNAL_DEFAULT_HOME "/usr/local/share/signal"
#endif

static int file_exists(const char *p) { return access(p, R_OK) == 0; }

/* Where lua/ and presets/ live: $SIGNAL_HOME, else next to bin/, else the
 * install prefix. */
static void find_home(char *out, size_t cap)
{
    const char *env = getenv("SIGNAL_HOME");
    if (env && *env) { snprintf(out, cap, "%s", env); return; }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *dir = dirname(dirname(exe));
        char probe[PATH_MAX + 32];
        snprintf(probe, sizeof probe, "%s/lua/signal/dev/cli.lua", dir);
        if (file_exists(probe)) { snprintf(out, cap, "%s", dir); return; }
    }
    snprintf(out, cap, "%s", SIGNAL_DEFAULT_HOME);
}

/* Runs signal.dev.cli.main(argv) in the boot state. Returns the exit code, or -1
 * with the plan table left on top of the stack. */
static int run_cli(lua_State *L, const char *home, int argc, char **argv)
{
    sg_prepare_state(L, home);
    lua_pushcfunction(L, sg_traceback);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "signal.dev.cli");
    if (lua_pcall(L, 1, 1, -3) != 0) {
        fprintf(stderr, "signal: cannot load the Lua runtime from %s/lua: %s\n", home, lua_tostring(L, -1));
        return 1;
    }
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    if (lua_pcall(L, 1, 1, -4) != 0) {
        fprintf(stderr, "signal: %s\n", lua_tostring(L, -1));
        return 1;
    }
    if (lua_isnumber(L, -1)) return (int)lua_tointeger(L, -1);
    if (!lua_istable(L, -1)) return 0;
    return -1;
}

static const char *plan_string(lua_State *L, const char *key)
{
    lua_getfield(L, -1, key);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1);   /* still anchored by the plan table */
    return s;
}

static int plan_int(lua_State *L, const char *key, int dflt)
{
    lua_getfield(L, -1, key);
    int v = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

/* The plan's listen address ("host:port", "[v6]:port") into e, host into
 * host[cap]; checks the port is free. No listen: exec mode. 0, or -1. */
static int plan_listen(lua_State *boot, engine_t *e, char *host, size_t cap)
{
    const char *listen = plan_string(boot, "listen");
    if (!listen) return 0;
    const char *colon = strrchr(listen, ':');
    if (!colon) {
        fprintf(stderr, "signal: listen \"%s\" must be host:port\n", listen);
        return -1;
    }
    size_t hl = (size_t)(colon - listen);
    if (hl >= cap) hl = cap - 1;
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (host[0] == '[') {   /* [::1]:8080 */
        memmove(host, host + 1, strlen(host));
        char *rb = strchr(host, ']');
        if (rb) *rb = '\0';
    }
    e->listen_host = host;
    e->listen_port = atoi(colon + 1);
    char err[512];
    if (e->listen_port <= 0 || server_probe_address(host, e->listen_port, err, sizeof err) != 0) {
        if (e->listen_port <= 0) snprintf(err, sizeof err, "listen \"%s\": bad port", listen);
        sg_log("error", "cannot start", "error", err, NULL);
        return -1;
    }
    return 0;
}

/* The plan's args list, copied for start() in every worker. 0, or -1. */
static int plan_args(lua_State *boot, engine_t *e)
{
    lua_getfield(boot, -1, "args");
    int n = lua_istable(boot, -1) ? (int)lua_objlen(boot, -1) : 0;
    e->argv = calloc((size_t)n + 1, sizeof *e->argv);
    if (!e->argv) { lua_pop(boot, 1); return -1; }
    for (int i = 0; i < n; i++) {
        lua_rawgeti(boot, -1, i + 1);
        const char *a = lua_tostring(boot, -1);
        e->argv[i] = strdup(a ? a : "");
        lua_pop(boot, 1);
        if (!e->argv[i]) { lua_pop(boot, 1); return -1; }
        e->argc = i + 1;
    }
    lua_pop(boot, 1);
    return 0;
}

static void free_args(engine_t *e)
{
    for (int i = 0; i < e->argc; i++) free(e->argv[i]);
    free(e->argv);
    e->argv = NULL;
    e->argc = 0;
}

/* Until every worker has returned: SIGTERM/SIGINT drain and stop (a second
 * one stops waiting), SIGHUP reloads. Returns 0, or -1 when the workers
 * did not finish. */
static int wait_for_workers(engine_t *e)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    struct timespec tick = { 0, 100 * 1000 * 1000 };
    int stopping = 0;
    while (__atomic_load_n(&e->finished, __ATOMIC_SEQ_CST) < e->nworkers) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            if (!stopping) sg_log("info", "stopping: finishing in-flight work", NULL);
            else break;   /* second signal: do not wait any longer */
            stopping = 1;
            for (int i = 0; i < e->nworkers; i++) worker_request_stop(&e->workers[i]);
        } else if (sig == SIGHUP) {
            sg_log("info", "SIGHUP: reloading scripts", NULL);
            for (int i = 0; i < e->nworkers; i++) worker_request_reload(&e->workers[i]);
        }
    }
    return __atomic_load_n(&e->finished, __ATOMIC_SEQ_CST) < e->nworkers ? -1 : 0;
}

/* Runs the plan on top of boot's stack: worker threads until they stop. */
static int serve(lua_State *boot, const char *home)
{
    engine_t e;
    memset(&e, 0, sizeof e);
    e.home = home;
    e.entry = plan_string(boot, "entry");
    e.nworkers = plan_int(boot, "workers", 1);
    if (e.nworkers < 1) e.nworkers = 1;
    if (e.nworkers > 256) e.nworkers = 256;
    char host[256] = "";
    if (plan_listen(boot, &e, host, sizeof host) != 0) return 1;
    e.workers = calloc((size_t)e.nworkers, sizeof *e.workers);
    if (!e.workers || plan_args(boot, &e) != 0) {
        fprintf(stderr, "signal: out of memory\n");
        free_args(&e);
        free(e.workers);
        return 1;
    }
    for (int i = 0; i < e.nworkers; i++) {
        if (worker_init(&e.workers[i], &e, i) != 0) {
            fprintf(stderr, "signal: cannot create worker %d event loop\n", i);
            while (i-- > 0) worker_destroy(&e.workers[i]);
            free_args(&e);
            free(e.workers);
            return 1;
        }
    }
    for (int i = 0; i < e.nworkers; i++)
        pthread_create(&e.workers[i].thread, NULL, worker_main, &e.workers[i]);
    if (e.listen_port > 0) {
        char n[16];
        snprintf(n, sizeof n, "%d", e.nworkers);
        sg_log("info", "listening", "address", plan_string(boot, "listen"), "workers", n, "entry", e.entry, NULL);
    }
    if (wait_for_workers(&e) != 0) {
        sg_log("warn", "forced exit", NULL);
        _exit(1);
    }
    for (int i = 0; i < e.nworkers; i++) {
        pthread_join(e.workers[i].thread, NULL);
        worker_destroy(&e.workers[i]);
    }
    int code = e.exit_code;
    free_args(&e);
    free(e.workers);
    return code;
}

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
        curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
        printf("signal 1.8.0 (%s, libevent %s, libcurl %s, hiredis %d.%d.%d)\n", LUAJIT_VERSION,
               event_get_version(), cv->version, HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
        return 0;
    }
    /* Signals are taken by sigtimedwait in this thread; workers inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Thousands of keep-alive clients and upstream connections need fds. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    evthread_use_pthreads();
    curl_global_init(CURL_GLOBAL_DEFAULT);

    char home[PATH_MAX];
    find_home(home, sizeof home);
    setenv("SIGNAL_HOME", home, 0);

    lua_State *boot = luaL_newstate();
    int code = run_cli(boot, home, argc, argv);
    if (code < 0) code = serve(boot, home);
    lua_close(boot);
    curl_global_cleanup();
    libevent_global_shutdown();
    return code;
}
