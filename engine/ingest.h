/*
 * ingest.h — the collector's entry points for the server and the worker.
 * The collector itself (every request to an event route, answered from C)
 * is engine/collect/: collect.h says which file does what.
 */
#ifndef SIGNAL_INGEST_H
#define SIGNAL_INGEST_H

#include "worker.h"

struct sg_conn;

/* Called by the server for every request before Lua sees it: 1 when the
 * collector took it (it replies later, or has already), 0 when the path is
 * not one of its routes and Lua must. */
int ingest_try(worker_t *w, struct sg_conn *c);

/* Requests the collector holds (shutdown waits for them like for tasks). */
int ingest_inflight(const worker_t *w);

/* Shutdown: forget every connection (the server frees them next), then,
 * after lua_close has run the last Redis callbacks, free the collector. */
void ingest_detach(worker_t *w);
void ingest_free(worker_t *w);

/* core.ingest_configure / core.ingest_stats (engine/API.md). */
void sg_open_ingest(lua_State *L);

#endif
