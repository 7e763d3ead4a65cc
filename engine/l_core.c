/*
 * l_core.c — luaopen_signal_core: assembles signal.core (engine/API.md) and
 * holds the small primitives that need no library of their own: clocks,
 * sleep, spawn, gunzip, the raw log writer and the reload hooks.
 *
 * Every primitive works in both builds: inside an engine task it yields to
 * the worker's loop; standalone (or from a worker's start-up chunk) it blocks.
 */
#include "l_core.h"
#include "ingest.h"
#include "log.h"
#include "server.h"
#include "worker.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <lauxlib.h>
#include <lualib.h>

#define SG_VERSION "1.8.0"

double sg_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double sg_wallclock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int l_now(lua_State *L) { lua_pushnumber(L, sg_wallclock()); return 1; }
static int l_monotonic(lua_State *L) { lua_pushnumber(L, sg_monotonic()); return 1; }

/* ---- sleep ---------------------------------------------------------------- */

typedef struct {
    sg_op op;
    worker_t *w;
    struct event *ev;
} sleep_op;

static void sleep_destroy(sg_op *op)
{
    sleep_op *s = (sleep_op *)op;
    event_free(s->ev);
    free(s);
}

static void sleep_fired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    sleep_op *s = arg;
    worker_ready(s->w, &s->op);
}

static int l_sleep(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    if (ms < 0) ms = 0;
    worker_t *w = worker_of(L);
    if (!w || !worker_can_yield(w, L)) {
        struct timespec ts = { (time_t)(ms / 1000), (long)((ms - (time_t)(ms / 1000) * 1000) * 1e6) };
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
        return 0;
    }
    sleep_op *s = calloc(1, sizeof *s);
    if (!s) return luaL_error(L, "sleep: out of memory");
    s->op.co = L;
    s->op.destroy = sleep_destroy;
    s->w = w;
    s->ev = evtimer_new(w->base, sleep_fired, s);
    struct timeval tv = { (long)(ms / 1000), (long)((ms - (long)(ms / 1000) * 1000) * 1000) };
    evtimer_add(s->ev, &tv);
    return worker_yield(w, L);
}

/* ---- spawn ---------------------------------------------------------------- */

static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    worker_t *w = worker_of(L);
    if (!w) {
        /* Standalone: there is no loop to come back to, so run it now. */
        lua_call(L, nargs, 0);
        return 0;
    }
    if (worker_spawn(w, L, nargs) != 0) return luaL_error(L, "spawn: out of memory");
    return 0;
}

/* ---- gunzip --------------------------------------------------------------- */

static int l_gunzip(lua_State *L)
{
    size_t len;
    const char *in = luaL_checklstring(L, 1, &len);
    size_t max = (size_t)luaL_optinteger(L, 2, 4 * 1024 * 1024);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 32) != Z_OK) {   /* +32: gzip or zlib header */
        lua_pushnil(L);
        lua_pushliteral(L, "gzip: cannot initialise zlib");
        return 2;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    size_t total = 0;
    int rc;
    do {
        char *out = luaL_prepbuffer(&b);
        zs.next_out = (Bytef *)out;
        zs.avail_out = LUAL_BUFFERSIZE;
        rc = inflate(&zs, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) break;
        size_t got = LUAL_BUFFERSIZE - zs.avail_out;
        total += got;
        if (total > max) { rc = Z_MEM_ERROR; break; }
        luaL_addsize(&b, got);
        if (rc == Z_OK && zs.avail_in == 0 && got == 0) { rc = Z_DATA_ERROR; break; }
    } while (rc != Z_STREAM_END);
    inflateEnd(&zs);
    if (rc != Z_STREAM_END) {
        luaL_pushresult(&b);
        lua_pop(L, 1);
        lua_pushnil(L);
        if (total > max) lua_pushliteral(L, "too large");
        else lua_pushliteral(L, "gzip: body is not valid gzip data");
        return 2;
    }
    luaL_pushresult(&b);
    return 1;
}

/* ---- streaming replies (Server-Sent Events) --------------------------------- */

/* core.stream_start(status, headers): turns the current request's reply
 * into a chunked stream; the handler then writes and, when it returns, the
 * stream ends (its return values are ignored). */
/* The request the calling handler serves, and its "streaming" flag. */
static struct sg_conn *handler_request(lua_State *L, int **streaming)
{
    worker_t *w = worker_of(L);
    return w ? worker_request_of(w, L, streaming) : NULL;
}

static int l_stream_start(lua_State *L)
{
    int status = (int)luaL_checkinteger(L, 1);
    int *streaming = NULL;
    struct sg_conn *req = handler_request(L, &streaming);
    if (!req) return luaL_error(L, "stream_start: only an HTTP request handler can stream");
    if (*streaming) return luaL_error(L, "stream_start: the stream is already started");
    if (server_stream_start(req, L, status, 2) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    *streaming = 1;
    lua_pushboolean(L, 1);
    return 1;
}

/* core.stream_write(s) → true, or nil, "closed" once the client has gone. */
static int l_stream_write(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int *streaming = NULL;
    struct sg_conn *req = handler_request(L, &streaming);
    if (!req || !*streaming) return luaL_error(L, "stream_write: call stream_start first");
    if (server_stream_write(req, s, n) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- suspend / wakeup -------------------------------------------------------- */

/* core.suspend(): parks the calling task until some task calls
 * core.wakeup(co) with it; returns nothing. Callers loop on their own
 * condition (a wake-up carries no value). */
static int l_suspend(lua_State *L)
{
    worker_t *w = worker_of(L);
    if (!w || !worker_can_yield(w, L))
        return luaL_error(L, "suspend: only an engine task can suspend (not standalone, not start-up)");
    return worker_suspend(w, L);
}

/* core.wakeup(co) → true when co was suspended and will resume next turn. */
static int l_wakeup(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTHREAD);
    worker_t *w = worker_of(L);
    lua_pushboolean(L, w && worker_wakeup(w, lua_tothread(L, 1)) == 0);
    return 1;
}

/* ---- logging, worker facts, reload hooks ------------------------------------ */

static int l_log_write(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    sg_log_line(s, len);
    return 0;
}

static int l_cpu_count(lua_State *L)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}

static int l_stopping(lua_State *L)
{
    worker_t *w = worker_of(L);
    lua_pushboolean(L, w && w->stopping);
    return 1;
}

static int l_on_reload(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    worker_t *w = worker_of(L);
    if (!w) return 0;   /* standalone: nothing ever triggers a reload */
    if (w->reload_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, w->reload_ref);
    lua_pushvalue(L, 1);
    w->reload_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int l_broadcast_reload(lua_State *L)
{
    worker_t *w = worker_of(L);
    if (!w) return 0;
    for (int i = 0; i < w->engine->nworkers; i++)
        worker_request_reload(&w->engine->workers[i]);
    return 0;
}

/* Debounced: editors write files in several steps; one reload per burst. */
static void inotify_debounced(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    worker_request_reload(arg);
}

static void inotify_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    worker_t *w = arg;
    char buf[4096];
    while (read(fd, buf, sizeof buf) > 0) {}
    struct timeval tv = { 0, 150 * 1000 };
    evtimer_add(w->inotify_debounce, &tv);
}

static int l_watch(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    worker_t *w = worker_of(L);
    if (!w) return 0;
    if (w->inotify_fd < 0) {
        w->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->inotify_fd < 0) {
            lua_pushnil(L);
            lua_pushfstring(L, "inotify: %s", strerror(errno));
            return 2;
        }
        w->inotify_ev = event_new(w->base, w->inotify_fd, EV_READ | EV_PERSIST, inotify_readable, w);
        w->inotify_debounce = evtimer_new(w->base, inotify_debounced, w);
        event_add(w->inotify_ev, NULL);
    }
    if (inotify_add_watch(w->inotify_fd, dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE) < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot watch %s: %s", dir, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

void sg_prepare_state(lua_State *L, const char *home)
{
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", home, home);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_signal_core);
    lua_setfield(L, -2, "signal.core");
    lua_pop(L, 2);
}

int sg_traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

int luaopen_signal_core(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "now", l_now },
        { "monotonic", l_monotonic },
        { "sleep", l_sleep },
        { "spawn", l_spawn },
        { "gunzip", l_gunzip },
        { "log_write", l_log_write },
        { "cpu_count", l_cpu_count },
        { "stopping", l_stopping },
        { "on_reload", l_on_reload },
        { "broadcast_reload", l_broadcast_reload },
        { "watch", l_watch },
        { "stream_start", l_stream_start },
        { "stream_write", l_stream_write },
        { "suspend", l_suspend },
        { "wakeup", l_wakeup },
        { NULL, NULL },
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    sg_open_buf(L);
    sg_open_crypto(L);
    sg_open_http(L);
    sg_open_redis(L);
    sg_open_event(L);
    sg_open_ingest(L);

    worker_t *w = worker_of(L);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, SG_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushboolean(L, w != NULL);
    lua_setfield(L, -2, "in_engine");
    lua_pushinteger(L, w ? w->id : 0);
    lua_setfield(L, -2, "worker_id");
    lua_pushinteger(L, w ? w->engine->nworkers : 1);
    lua_setfield(L, -2, "workers");
    if (w && w->engine->home) {
        lua_pushstring(L, w->engine->home);
        lua_setfield(L, -2, "home");
    } else {
        const char *home = getenv("SIGNAL_HOME");
        if (home) { lua_pushstring(L, home); lua_setfield(L, -2, "home"); }
    }
    /* Register as loaded so both `require "signal.core"` spellings agree. */
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "signal.core");
    lua_pop(L, 1);
    return 1;
}
