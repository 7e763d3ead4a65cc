/*
 * stitch.c — the identity linking keys an event carries: its email, phone
 * and user id, which the commit remembers in signal:{pk}:id:<canonical_id>
 * (commit.c) so that a later anonymous event of the same browser is
 * enriched with them (signal.pipeline.stitch reads the hash back in the
 * processor).
 *
 * Taken from identify events (traits, context.traits, then properties) and
 * from any other event whose traits or context.traits carry an email, a
 * phone or a user id — a plain event's userId alone is no identity news.
 * Never for an event without a canonical_id: there is nothing to key them by.
 */
#include "normalize.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* the member of the view named name, or -1 */
static int32_t find(const sg_obj_view *v, const char *name, size_t n)
{
    if (v->node >= 0) return sg_json_member(v->j, (uint32_t)v->node, name, n);
    int32_t found = -1;
    for (int i = 0; i < v->nmembers; i++)
        if (sg_json_key_is(v->j, v->members[i], name, n)) found = (int32_t)v->members[i];
    return found;
}

#define FIND(v, lit) find((v), lit, sizeof(lit) - 1)

/* present(): a string with a non-space character, or an
 * integer of at most 15 digits (as decimal), appended to aux → 1; else 0 */
static int present_node(const sg_json *j, int32_t c, sg_bytes *aux, size_t *off, size_t *len)
{
    if (c < 0) return 0;
    const sg_jnode *n = &j->node[c];
    *off = aux->len;
    if (n->type == SG_J_NUM) {
        double v = sg_json_number(j->s + n->val, n->vlen);
        if (v != floor(v) || v > 1e15 || v < -1e15) return 0;
        char buf[32];
        int k = snprintf(buf, sizeof buf, "%lld", (long long)v);
        sg_bytes_put(aux, buf, (size_t)k);
    } else if (n->type == SG_J_STR) {
        if (sg_bytes_reserve(aux, n->vlen) != 0) return 0;
        char *d = aux->data + aux->len;
        size_t k = sg_json_unescape(j->s + n->val + 1, n->vlen - 2, d), i = 0;
        while (i < k && (d[i] == ' ' || (d[i] >= '\t' && d[i] <= '\r'))) i++;
        if (i == k) return 0;
        aux->len += k;
    } else {
        return 0;
    }
    *len = aux->len - *off;
    return 1;
}

static int present_str(const char *s, size_t n, sg_bytes *aux, size_t *off, size_t *len)
{
    size_t i = 0;
    if (!s) return 0;
    while (i < n && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r'))) i++;
    if (i == n) return 0;
    *off = aux->len;
    *len = n;
    sg_bytes_put(aux, s, n);
    return 1;
}

/* the first of the candidates that is present */
static int first_present(const sg_json *j, const int32_t *c, int n, sg_bytes *aux, size_t *off, size_t *len)
{
    for (int i = 0; i < n; i++)
        if (present_node(j, c[i], aux, off, len)) return 1;
    return 0;
}

void sg_linking_keys(const sg_link_in *in, sg_bytes *aux, sg_norm_result *r)
{
    for (int i = 0; i < SG_LINK_COUNT; i++) r->link_len[i] = 0;
    if (!in->has_canonical_id) return;
    const sg_json *j = in->traits.j;
    const sg_obj_view *t = &in->traits, *ct = &in->context_traits, *p = &in->properties;
    int32_t t_uid = FIND(t, "user_id"), t_uidc = FIND(t, "userId");
    int32_t ct_uid = FIND(ct, "user_id"), ct_uidc = FIND(ct, "userId");
    size_t mark = aux->len;
    size_t *off = r->link, *len = r->link_len;
    int32_t email[] = { FIND(t, "email"), FIND(ct, "email"), in->identify ? FIND(p, "email") : -1 };
    int32_t phone[] = { FIND(t, "phone"), FIND(ct, "phone"), in->identify ? FIND(p, "phone") : -1 };
    int32_t uid[] = { t_uid, t_uidc, ct_uid, ct_uidc };
    int has_email = first_present(j, email, 2, aux, &off[SG_LINK_EMAIL], &len[SG_LINK_EMAIL]);
    int has_phone = first_present(j, phone, 2, aux, &off[SG_LINK_PHONE], &len[SG_LINK_PHONE]);
    if (!in->identify && !has_email && !has_phone && t_uid < 0 && t_uidc < 0 && ct_uid < 0 && ct_uidc < 0) {
        aux->len = mark;                     /* a plain event */
        len[SG_LINK_EMAIL] = len[SG_LINK_PHONE] = 0;
        return;
    }
    if (in->identify) {
        if (!has_email) has_email = present_node(j, email[2], aux, &off[SG_LINK_EMAIL], &len[SG_LINK_EMAIL]);
        if (!has_phone) has_phone = present_node(j, phone[2], aux, &off[SG_LINK_PHONE], &len[SG_LINK_PHONE]);
    }
    int has_uid = in->user_id ? present_str(in->user_id, in->user_id_len, aux, &off[SG_LINK_USER_ID],
                                            &len[SG_LINK_USER_ID])
                              : present_node(j, in->user_id_node, aux, &off[SG_LINK_USER_ID], &len[SG_LINK_USER_ID]);
    if (!has_uid) has_uid = first_present(j, uid, 4, aux, &off[SG_LINK_USER_ID], &len[SG_LINK_USER_ID]);
    if (!has_email) len[SG_LINK_EMAIL] = 0;
    if (!has_phone) len[SG_LINK_PHONE] = 0;
    if (!has_uid) len[SG_LINK_USER_ID] = 0;
}
