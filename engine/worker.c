/*
 * worker.c — a worker thread: its event loop, its lua_State and the task
 * scheduler that runs every request and background job as a coroutine.
 * See worker.h for the model.
 */
#include "worker.h"
#include "l_core.h"
#include "log.h"
#include "server.h"
#include "ingest.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>

#define REG_WORKER "signal.worker"
struct task {
    lua_State *co;
    int ref;                      /* registry reference: anchors co while it runs */
    struct sg_conn *req;   /* NULL for background tasks */
    int is_main;                  /* exec mode: its end ends the run */
    int streaming;                /* a chunked reply was started */
    int suspended;                /* waiting in core.suspend for core.wakeup */
};

worker_t *worker_of(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, REG_WORKER);
    worker_t *w = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return w;
}

/* ---- coroutine → task map ---------------------------------------------------
 * Every resume, suspend, wake-up and Redis call looks its task up; a
 * registry table keyed by thread cost a string-keyed lookup, a push and a
 * hash lookup each time. This is a linear-probing table of task pointers
 * keyed by the lua_State address, at most half full. */

static unsigned tmap_slot(const lua_State *co, unsigned mask)
{
    uint64_t h = (uint64_t)(uintptr_t)co;
    h ^= h >> 29;
    h *= 0x9E3779B97F4A7C15ull;
    return (unsigned)(h >> 32) & mask;
}

static task_t *task_of(worker_t *w, const lua_State *co)
{
    if (!w->tmap) return NULL;
    unsigned mask = w->tmap_cap - 1;
    for (unsigned i = tmap_slot(co, mask);; i = (i + 1) & mask) {
        task_t *t = w->tmap[i];
        if (!t || t->co == co) return t;
    }
}

static void tmap_insert(task_t **map, unsigned cap, task_t *t)
{
    unsigned mask = cap - 1, i = tmap_slot(t->co, mask);
    while (map[i]) i = (i + 1) & mask;
    map[i] = t;
}

static int tmap_put(worker_t *w, task_t *t)
{
    if ((unsigned)(w->ntasks + 1) * 2 > w->tmap_cap) {
        unsigned cap = w->tmap_cap ? w->tmap_cap * 2 : 256;
        task_t **map = calloc(cap, sizeof *map);
        if (!map) return -1;
        for (unsigned i = 0; i < w->tmap_cap; i++)
            if (w->tmap[i]) tmap_insert(map, cap, w->tmap[i]);
        free(w->tmap);
        w->tmap = map;
        w->tmap_cap = cap;
    }
    tmap_insert(w->tmap, w->tmap_cap, t);
    return 0;
}

/* Removes t, shifting later entries of its probe run back into the hole. */
static void tmap_del(worker_t *w, task_t *t)
{
    unsigned mask = w->tmap_cap - 1, i = tmap_slot(t->co, mask);
    while (w->tmap[i] != t) i = (i + 1) & mask;
    for (unsigned j = (i + 1) & mask; w->tmap[j]; j = (j + 1) & mask) {
        unsigned k = tmap_slot(w->tmap[j]->co, mask);
        /* move j into the hole i unless its home slot k lies in (i, j] */
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            w->tmap[i] = w->tmap[j];
            i = j;
        }
    }
    w->tmap[i] = NULL;
}

int worker_can_yield(worker_t *w, lua_State *L)
{
    return L != w->L && task_of(w, L) != NULL;
}

struct sg_conn *worker_request_of(worker_t *w, lua_State *L, int **streaming)
{
    if (L == w->L) return NULL;
    task_t *t = task_of(w, L);
    if (!t) return NULL;
    if (streaming) *streaming = &t->streaming;
    return t->req;
}

int worker_yield(worker_t *w, lua_State *L)
{
    w->yielding = 1;
    return lua_yield(L, 0);
}

void worker_ready(worker_t *w, sg_op *op)
{
    op->next = NULL;
    if (w->ready_tail) w->ready_tail->next = op;
    else w->ready_head = op;
    w->ready_tail = op;
    event_active(w->ready_ev, EV_READ, 0);
}

/* Creates a task for the thread on top of w->L's stack and pops it. */
static task_t *task_register(worker_t *w, struct sg_conn *req)
{
    lua_State *L = w->L;
    lua_State *co = lua_tothread(L, -1);
    task_t *t = calloc(1, sizeof *t);
    if (!t) { lua_pop(L, 1); return NULL; }
    t->co = co;
    t->req = req;
    if (tmap_put(w, t) != 0) { free(t); lua_pop(L, 1); return NULL; }
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);   /* pops the thread, anchors it */
    w->ntasks++;
    return t;
}

static void task_finish(worker_t *w, task_t *t, int rc)
{
    lua_State *L = w->L, *co = t->co;
    if (rc != 0) {
        const char *msg = lua_tostring(co, -1);
        luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
        sg_log("error", t->req ? "request handler failed" : "task failed",
               "error", lua_tostring(L, -1), NULL);
        lua_pop(L, 1);
    }
    if (t->req && t->streaming) server_stream_end(t->req);
    else if (t->req) server_reply(t->req, rc == 0 ? co : NULL);
    if (t->is_main) {
        w->engine->exit_code = rc != 0 ? 1 : (lua_isnumber(co, 1) ? (int)lua_tointeger(co, 1) : 0);
        w->main_task_done = 1;
        for (int i = 0; i < w->engine->nworkers; i++) worker_request_stop(&w->engine->workers[i]);
    }
    tmap_del(w, t);
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    free(t);
    w->ntasks--;
}

/* Resumes co with nargs values on its stack; finishes the task if it ends. */
static void task_resume(worker_t *w, lua_State *co, int nargs)
{
    w->yielding = 0;
    int rc = lua_resume(co, nargs);
    task_t *t = task_of(w, co);
    if (!t) return;   /* not ours (cannot happen: ops only target tasks) */
    if (rc == LUA_YIELD) {
        if (w->yielding) return;   /* waiting on a primitive */
        /* A bare coroutine.yield would leave the task hanging forever. */
        lua_settop(co, 0);
        lua_pushliteral(co, "coroutine.yield() from a request or task: only signal.core "
                            "primitives may suspend an engine task");
        rc = LUA_ERRRUN;
    }
    task_finish(w, t, rc);
}

int worker_start_request(worker_t *w, struct sg_conn *req)
{
    lua_State *L = w->L;
    lua_State *co = lua_newthread(L);
    task_t *t = task_register(w, req);
    if (!t) return -1;
    lua_rawgeti(co, LUA_REGISTRYINDEX, w->handler_ref);
    server_push_request(co, req);
    task_resume(w, co, 1);
    return 0;
}

typedef struct {
    sg_op op;
} start_op;

static void free_op(sg_op *op) { free(op); }

int worker_suspend(worker_t *w, lua_State *L)
{
    task_t *t = task_of(w, L);
    t->suspended = 1;
    return worker_yield(w, L);
}

int worker_wakeup(worker_t *w, lua_State *co)
{
    task_t *t = task_of(w, co);
    if (!t || !t->suspended) return -1;   /* not waiting: a wake-up is no-op */
    start_op *op = calloc(1, sizeof *op);
    if (!op) return -1;
    t->suspended = 0;
    op->op.co = co;
    op->op.destroy = free_op;
    worker_ready(w, &op->op);
    return 0;
}

int worker_spawn(worker_t *w, lua_State *L, int nargs)
{
    /* fn and args are the top nargs+1 values of L. */
    lua_State *co = lua_newthread(w->L);
    if (L == w->L) lua_insert(L, -(nargs + 2));   /* thread below fn+args */
    lua_xmove(L, co, nargs + 1);
    task_t *t = task_register(w, NULL);
    if (!t) return -1;
    start_op *op = calloc(1, sizeof *op);
    if (!op) return -1;
    op->op.co = co;
    op->op.nresults = nargs;
    op->op.destroy = free_op;
    worker_ready(w, &op->op);
    return 0;
}

static void drain_ready(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    worker_t *w = arg;
    sg_op *op = w->ready_head;
    w->ready_head = w->ready_tail = NULL;   /* ops queued now wait one turn: fairness */
    while (op) {
        sg_op *next = op->next;
        lua_State *co = op->co;
        int n = op->nresults;
        if (op->finish) n += op->finish(op);
        if (op->destroy) op->destroy(op);
        task_resume(w, co, n);
        op = next;
    }
}

/* ---- lifecycle -------------------------------------------------------------- */

static void stop_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    worker_t *w = arg;
    if ((w->ntasks == 0 && ingest_inflight(w) == 0) || sg_monotonic() > w->stop_deadline) {
        if (w->ntasks > 0) {
            char n[16];
            snprintf(n, sizeof n, "%d", w->ntasks);
            sg_log("warn", "shutdown grace period over, abandoning tasks", "tasks", n, NULL);
        }
        event_base_loopbreak(w->base);
        return;
    }
    struct timeval tv = { 0, 50 * 1000 };
    evtimer_add(w->stop_timer, &tv);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    worker_t *w = arg;
    if (w->stopping) return;
    w->stopping = 1;
    w->stop_deadline = sg_monotonic() + SG_STOP_GRACE_MS / 1000.0;
    server_stop_accepting(w);
    stop_poll(-1, 0, w);
}

static void on_reload(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    worker_t *w = arg;
    if (w->reload_ref == LUA_NOREF || w->stopping) return;
    lua_rawgeti(w->L, LUA_REGISTRYINDEX, w->reload_ref);
    worker_spawn(w, w->L, 0);
}

void worker_request_stop(worker_t *w)
{
    if (w->stop_ev) event_active(w->stop_ev, EV_READ, 0);
}

void worker_request_reload(worker_t *w)
{
    if (w->reload_ev) event_active(w->reload_ev, EV_READ, 0);
}

int worker_init(worker_t *w, engine_t *e, int id)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->engine = e;
    w->inotify_fd = -1;
    w->handler_ref = LUA_NOREF;
    w->reload_ref = LUA_NOREF;
    w->base = event_base_new();
    if (!w->base) return -1;
    w->ready_ev = event_new(w->base, -1, 0, drain_ready, w);
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    w->reload_ev = event_new(w->base, -1, 0, on_reload, w);
    w->stop_timer = evtimer_new(w->base, stop_poll, w);
    if (w->ready_ev && w->stop_ev && w->reload_ev && w->stop_timer) return 0;
    worker_destroy(w);
    return -1;
}

/* Runs the entry module's start(args) and keeps what it returns. */
static int boot_lua(worker_t *w)
{
    engine_t *e = w->engine;
    lua_State *L = luaL_newstate();
    if (!L) return -1;
    w->L = L;
    /* The worker is findable before any primitive runs (worker_of). */
    lua_pushlightuserdata(L, w);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_WORKER);
    sg_prepare_state(L, e->home);

    lua_pushcfunction(L, sg_traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, e->entry);
    if (lua_pcall(L, 1, 1, -3) != 0) goto fail;
    lua_getfield(L, -1, "start");
    if (!lua_isfunction(L, -1)) {
        lua_pushfstring(L, "module %s has no start() function", e->entry);
        goto fail;
    }
    lua_createtable(L, e->argc, 0);
    for (int i = 0; i < e->argc; i++) {
        lua_pushstring(L, e->argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    if (lua_pcall(L, 1, 1, -4) != 0) goto fail;
    if (!lua_isfunction(L, -1)) {
        lua_pushfstring(L, "%s.start() must return a function", e->entry);
        goto fail;
    }
    if (e->listen_port > 0) {
        w->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        /* exec mode: the returned function is the run itself. */
        lua_State *co = lua_newthread(L);
        lua_pushvalue(L, -2);
        lua_xmove(L, co, 1);
        task_t *t = task_register(w, NULL);
        if (!t) return -1;
        t->is_main = 1;
        start_op *op = calloc(1, sizeof *op);
        if (!op) return -1;
        op->op.co = co;
        op->op.destroy = free_op;
        worker_ready(w, &op->op);
    }
    lua_settop(L, 0);
    return 0;
fail:
    sg_log("error", "worker start-up failed", "error", lua_tostring(L, -1), NULL);
    return -1;
}

static void worker_cleanup(worker_t *w)
{
    w->stopping = 2;
    ingest_detach(w);
    server_free(w);
    sg_http_destroy(w);
    while (w->ready_head) {      /* results nobody will read any more */
        sg_op *op = w->ready_head;
        w->ready_head = op->next;
        if (op->destroy) op->destroy(op);
    }
    if (w->L) lua_close(w->L);   /* __gc closes Redis connections */
    w->L = NULL;
    ingest_free(w);              /* after the last Redis callback */
    /* tasks abandoned at the end of the grace period */
    for (unsigned i = 0; i < w->tmap_cap; i++) free(w->tmap[i]);
    free(w->tmap);
    w->tmap = NULL;
    w->tmap_cap = 0;
    w->ntasks = 0;
    if (w->inotify_ev) event_free(w->inotify_ev);
    if (w->inotify_debounce) event_free(w->inotify_debounce);
    if (w->inotify_fd >= 0) close(w->inotify_fd);
    w->inotify_ev = w->inotify_debounce = NULL;
    w->inotify_fd = -1;
}

/* The events other threads may still poke (stop, reload) live until join.
 * Also undoes a worker_init that failed half-way. */
void worker_destroy(worker_t *w)
{
    if (!w->base) return;
    if (w->ready_ev) event_free(w->ready_ev);
    if (w->stop_ev) event_free(w->stop_ev);
    if (w->reload_ev) event_free(w->reload_ev);
    if (w->stop_timer) event_free(w->stop_timer);
    event_base_free(w->base);
    w->base = NULL;
    w->ready_ev = w->stop_ev = w->reload_ev = w->stop_timer = NULL;
}

/* The HTTP server; the collector (engine/collect/) sees every request before Lua
 * (it declines what it cannot serve alone, and all of it until
 * core.ingest_configure has run). */
static int start_server(worker_t *w)
{
    if (server_start(w) != 0) return -1;
    server_set_request_hook(w, ingest_try);
    return 0;
}

void *worker_main(void *arg)
{
    worker_t *w = arg;
    engine_t *e = w->engine;
    if (boot_lua(w) != 0 || (e->listen_port > 0 && start_server(w) != 0)) {
        e->exit_code = 1;
        w->started_ok = 0;
        for (int i = 0; i < e->nworkers; i++) worker_request_stop(&e->workers[i]);
        worker_cleanup(w);
        __atomic_add_fetch(&e->finished, 1, __ATOMIC_SEQ_CST);
        return NULL;
    }
    w->started_ok = 1;
    event_base_dispatch(w->base);
    worker_cleanup(w);
    __atomic_add_fetch(&e->finished, 1, __ATOMIC_SEQ_CST);
    return NULL;
}
