/*
 * ingest.h — the collector's C lane (engine/ingest.c): plain single events
 * served from the parsed request to the Redis group commit without Lua.
 */
#ifndef SIGNAL_INGEST_H
#define SIGNAL_INGEST_H

#include "worker.h"

struct sg_conn;

/* Called by the server for every request before Lua sees it: 1 when the
 * lane took it (it replies later, or has already), 0 when Lua must. */
int ingest_try(worker_t *w, struct sg_conn *c);

/* Requests the lane holds (shutdown waits for them like for tasks). */
int ingest_inflight(const worker_t *w);

/* Shutdown: forget every connection (the server frees them next), then,
 * after lua_close has run the last Redis callbacks, free the lane. */
void ingest_detach(worker_t *w);
void ingest_free(worker_t *w);

/* core.ingest_configure / core.ingest_stats (engine/API.md). */
void sg_open_ingest(lua_State *L);

#endif
