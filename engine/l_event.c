/*
 * l_event.c — core.event_json: the collector's fast path (in progress).
 */
#include "l_core.h"

void sg_open_event(lua_State *L)
{
    (void)L;
}
