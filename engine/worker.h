/*
 * worker.h — one event loop, one lua_State, one curl multi handle and the
 * Redis connections it drives, per thread.
 *
 * The scheduling model is OpenResty's cosocket model: every HTTP request and
 * every background job runs in its own Lua coroutine (a "task"). An I/O
 * primitive registers an operation ("op") and yields; when libcurl, hiredis or
 * a timer completes the op, the completion callback only pushes the results
 * onto the coroutine's stack and appends the op to the worker's ready queue.
 * The loop drains that queue and resumes coroutines from a clean stack, so Lua
 * is never re-entered from inside a libcurl or hiredis callback.
 *
 * The same sources also build as a standalone Lua module (no worker); then
 * worker_of() returns NULL and every primitive takes its blocking path.
 */
#ifndef SIGNAL_WORKER_H
#define SIGNAL_WORKER_H

#include <pthread.h>
#include <stdint.h>
#include <lua.h>

struct event_base;
struct event;
struct sg_conn;                         /* server.c: a connection and its request */
struct sg_server;

typedef struct engine engine_t;
typedef struct worker worker_t;
typedef struct sg_op sg_op;
typedef struct task task_t;
typedef struct http_state http_state;   /* l_http.c */

/* An operation a coroutine waits on. Completion callbacks fill it in (and may
 * push results onto op->co) and hand it to worker_ready(). */
struct sg_op {
    sg_op *next;                       /* ready-queue link */
    lua_State *co;                     /* the coroutine to resume */
    int nresults;                      /* values already pushed onto co */
    int (*finish)(sg_op *op);          /* optional: push results late, return count */
    void (*destroy)(sg_op *op);        /* optional: free the op after resuming */
};

/* Hard limits on hostile input, explicit like lua-cjson's decode_max_depth
 * (the request limits are http_parse.h's). */
#define SG_MAX_RESPONSE_BODY  (16 * 1024 * 1024)
#define SG_STOP_GRACE_MS      10000           /* in-flight work after SIGTERM */

struct engine {
    int nworkers;
    worker_t *workers;                 /* array, immutable after start */
    const char *home;                  /* dir holding lua/ and presets/ */
    const char *entry;                 /* Lua module with start(args) */
    const char *listen_host;
    int listen_port;                   /* 0: no HTTP server (exec mode) */
    int argc;
    char **argv;                       /* passed to start() */
    volatile int exit_code;            /* set by exec mode or a failed start */
    int finished;                      /* workers that returned (atomic ops) */
};

struct worker {
    int id;
    engine_t *engine;
    pthread_t thread;
    struct event_base *base;
    lua_State *L;
    struct sg_server *server;          /* server.c */
    struct sg_ingest *ingest;          /* engine/collect/: the collector, or NULL */
    http_state *hs;                    /* curl multi, owned by l_http.c */

    sg_op *ready_head, *ready_tail;
    struct event *ready_ev;            /* drains the ready queue */
    struct event *stop_ev;             /* SIGTERM from the main thread */
    struct event *reload_ev;           /* SIGHUP / broadcast_reload */
    struct event *stop_timer;          /* polls for drained tasks */
    struct event *inotify_ev;
    struct event *inotify_debounce;
    int inotify_fd;

    int ntasks;                        /* live coroutines */
    task_t **tmap;                     /* coroutine → task, open addressing (worker.c) */
    unsigned tmap_cap;                 /* power of two, 0 before the first task */
    int yielding;                      /* set by worker_yield */
    int main_task_ref;                 /* exec mode: the task whose end ends the run */
    int handler_ref;                   /* request handler returned by start() */
    int reload_ref;                    /* core.on_reload callback or LUA_NOREF */
    int main_task_done;                /* exec mode */
    int stopping;                      /* 1: draining, 2: closing the lua_State */
    double stop_deadline;
    int started_ok;
};

/* Returns the worker running L, or NULL in the standalone module. */
worker_t *worker_of(lua_State *L);

/* Whether L is a coroutine the engine started (so it may yield). */
int worker_can_yield(worker_t *w, lua_State *L);

/* The HTTP request a task serves (NULL for background tasks); *streaming
 * points at its "chunked reply started" flag. */
struct sg_conn *worker_request_of(worker_t *w, lua_State *L, int **streaming);

/* Suspend L until its op is queued; use as `return worker_yield(w, L);`.
 * Marks the yield as ours, so a stray coroutine.yield can be told apart. */
int worker_yield(worker_t *w, lua_State *L);

/* core.suspend / core.wakeup: a task parks itself until another task wakes
 * it (the collector's group commit). wakeup returns -1 when co is not
 * suspended, so a late or repeated wake-up does nothing. */
int worker_suspend(worker_t *w, lua_State *L);
int worker_wakeup(worker_t *w, lua_State *co);

/* Queue a completed op; its coroutine is resumed on the next loop turn. */
void worker_ready(worker_t *w, sg_op *op);

/* Start fn (with nargs args on top of L's stack) in a new task. */
int worker_spawn(worker_t *w, lua_State *L, int nargs);

/* Thread body and lifecycle. */
int worker_init(worker_t *w, engine_t *e, int id);
void *worker_main(void *arg);
void worker_destroy(worker_t *w);          /* main thread, after join */
int worker_start_request(worker_t *w, struct sg_conn *req);
void worker_request_stop(worker_t *w);
void worker_request_reload(worker_t *w);

/* l_http.c: abandons in-flight requests and frees the multi handle. */
void sg_http_destroy(worker_t *w);

double sg_monotonic(void);
double sg_wallclock(void);

#endif
