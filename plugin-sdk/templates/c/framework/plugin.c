// {{name}}: a berth framework in C. It keeps INSTANCES copies of a command running and replaces those that
// end; its task ids live in the framework's store (one per line under the key "active"), so a trap, a hot
// swap or a restart loses nothing. The configuration, if given, is the image to run; change the constants
// below for the rest.
//
// The bindings (gen/framework.h and friends) come from `wit-bindgen c`; build.sh makes them. Everything an
// export returns is freed by the generated code after the call, so returned memory must come from malloc
// (framework_string_dup, not framework_string_set).

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framework.h"

#define INSTANCES 2
#define MILLI_CPUS 100
#define MEM_MIB 32
static char IMAGE[256] = "busybox:latest";
static const char *COMMAND = "sleep 3600";

// Active task ids, and the number launched so far (for unique ids).
static char *active[INSTANCES];
static size_t active_len;
static uint64_t launched;
// After a task fails, no replacement before this instant (no hot loop when, say, the image is missing).
static uint64_t retry_after_ms;

static void text(framework_string_t *out, const char *s) { framework_string_dup(out, s); }

static void save(void) {
    size_t len = 0;
    for (size_t i = 0; i < active_len; i++) len += strlen(active[i]) + 1;
    framework_list_u8_t value = {malloc(len ? len : 1), len};
    size_t at = 0;
    for (size_t i = 0; i < active_len; i++) {
        size_t l = strlen(active[i]);
        memcpy(value.ptr + at, active[i], l);
        value.ptr[at + l] = '\n';
        at += l + 1;
    }
    framework_string_t key;
    framework_string_set(&key, "active");
    berth_plugin_store_store_error_t err;
    berth_plugin_store_put(&key, &value, &err);
    free(value.ptr);
}

bool exports_framework_init(framework_string_t *config, framework_string_t *err) {
    (void)err;
    if (config->len > 0 && config->len < sizeof IMAGE) {
        memcpy(IMAGE, config->ptr, config->len);
        IMAGE[config->len] = 0;
    }
    framework_string_free(config);
    framework_string_t key;
    framework_string_set(&key, "active");
    framework_list_u8_t value;
    active_len = 0;
    if (berth_plugin_store_get(&key, &value)) {
        size_t start = 0;
        for (size_t i = 0; i < value.len && active_len < INSTANCES; i++) {
            if (value.ptr[i] == '\n') {
                char *id = malloc(i - start + 1);
                memcpy(id, value.ptr + start, i - start);
                id[i - start] = 0;
                active[active_len++] = id;
                start = i + 1;
            }
        }
        framework_list_u8_free(&value);
    }
    launched = berth_plugin_host_now_ms();
    return true;
}

void exports_framework_demand(framework_list_task_shape_t *ret) {
    ret->len = 0;
    ret->ptr = NULL;
    if (active_len >= INSTANCES || berth_plugin_host_now_ms() < retry_after_ms) return;
    ret->ptr = calloc(1, sizeof *ret->ptr);
    ret->len = 1;
    ret->ptr[0] = (framework_task_shape_t){MILLI_CPUS, MEM_MIB, 0, 0, 0, (uint32_t)(INSTANCES - active_len)};
}

void exports_framework_offers(framework_list_offer_t *offers, framework_list_decision_t *ret) {
    ret->len = offers->len;
    ret->ptr = calloc(offers->len ? offers->len : 1, sizeof *ret->ptr);
    for (size_t o = 0; o < offers->len; o++) {
        framework_offer_t *offer = &offers->ptr[o];
        framework_decision_t *d = &ret->ptr[o];
        uint64_t cpus = offer->resources.milli_cpus, mem = offer->resources.mem_mib;
        size_t count = 0;
        bool waiting = berth_plugin_host_now_ms() < retry_after_ms;
        while (!waiting && active_len + count < INSTANCES && cpus >= MILLI_CPUS && mem >= MEM_MIB) {
            cpus -= MILLI_CPUS;
            mem -= MEM_MIB;
            count++;
        }
        if (count == 0) {
            d->tag = BERTH_PLUGIN_SCHEDULING_DECISION_DECLINE;
            d->val.decline.offer = offer->id;
            d->val.decline.refuse_seconds = 30;
            continue;
        }
        d->tag = BERTH_PLUGIN_SCHEDULING_DECISION_LAUNCH;
        d->val.launch.offer = offer->id;
        d->val.launch.tasks.len = count;
        d->val.launch.tasks.ptr = calloc(count, sizeof(berth_plugin_scheduling_task_spec_t));
        for (size_t t = 0; t < count; t++) {
            char id[64];
            snprintf(id, sizeof id, "{{name}}-%llu", (unsigned long long)launched++);
            active[active_len++] = strdup(id);
            berth_plugin_scheduling_task_spec_t *spec = &d->val.launch.tasks.ptr[t];
            text(&spec->id, id);
            text(&spec->name, "{{name}}");
            spec->resources.milli_cpus = MILLI_CPUS;
            spec->resources.mem_mib = MEM_MIB;
            text(&spec->container.image, IMAGE);
            spec->container.command.is_some = true;
            text(&spec->container.command.val, COMMAND);
            spec->container.network.tag = BERTH_PLUGIN_SCHEDULING_NETWORK_BRIDGE;
            spec->kill_grace_period_ms = 3000;
        }
    }
    save();
    framework_list_offer_free(offers);
}

void exports_framework_status(framework_list_task_status_t *updates, framework_list_action_t *ret) {
    bool ended = false;
    for (size_t u = 0; u < updates->len; u++) {
        framework_task_status_t *s = &updates->ptr[u];
        if (s->state < BERTH_PLUGIN_SCHEDULING_TASK_STATE_FINISHED) continue;
        for (size_t i = 0; i < active_len; i++) {
            if (strlen(active[i]) == s->task_id.len && memcmp(active[i], s->task_id.ptr, s->task_id.len) == 0) {
                free(active[i]);
                active[i] = active[--active_len];
                ended = true;
                if (s->state != BERTH_PLUGIN_SCHEDULING_TASK_STATE_FINISHED && s->state != BERTH_PLUGIN_SCHEDULING_TASK_STATE_KILLED)
                    retry_after_ms = berth_plugin_host_now_ms() + 1000;
                break;
            }
        }
    }
    save();
    ret->len = ended ? 1 : 0;
    ret->ptr = ended ? calloc(1, sizeof *ret->ptr) : NULL;
    if (ended) ret->ptr[0].tag = BERTH_PLUGIN_SCHEDULING_ACTION_REVIVE; // clears decline filters
    framework_list_task_status_free(updates);
}

void exports_framework_tick(uint64_t now_ms, framework_list_action_t *ret) {
    (void)now_ms;
    ret->len = 0;
    ret->ptr = NULL;
}

void exports_framework_handle(framework_http_request_t *request, framework_api_reply_t *ret) {
    char body[64];
    snprintf(body, sizeof body, "{\"active\": %zu}", active_len);
    memset(ret, 0, sizeof *ret);
    ret->response.status = 200;
    ret->response.body.len = strlen(body);
    ret->response.body.ptr = (uint8_t *)strdup(body);
    framework_http_request_free(request);
}
