// {{name}}: a berth allocator in C. It gives each framework with demand its tasks on the first node where
// they fit, frameworks in order of id; change exports_allocator_allocate to make it your policy.
//
// The bindings (gen/allocator.h and friends) come from `wit-bindgen c`; build.sh makes them. Everything an
// export returns is freed by the generated code after the call, so returned memory must come from malloc.

#include <stdlib.h>
#include <string.h>

#include "allocator.h"

bool exports_allocator_init(allocator_string_t *config, allocator_string_t *err) {
    (void)err;
    allocator_string_free(config);
    return true;
}

void exports_allocator_allocate(allocator_cluster_view_t *view, allocator_list_grant_t *ret) {
    size_t n = view->nodes.len, cap = 0;
    uint64_t (*left)[4] = calloc(n ? n : 1, sizeof *left);
    for (size_t i = 0; i < n; i++) {
        berth_plugin_types_resources_t *a = &view->nodes.ptr[i].available;
        left[i][0] = a->milli_cpus, left[i][1] = a->mem_mib, left[i][2] = a->disk_mib, left[i][3] = a->gpus;
    }
    ret->ptr = NULL;
    ret->len = 0;
    for (size_t f = 0; f < view->frameworks.len; f++) {
        berth_plugin_allocation_framework_t *fw = &view->frameworks.ptr[f];
        if (fw->suppressed) continue;
        for (size_t s = 0; s < fw->demand.len; s++) {
            berth_plugin_allocation_task_shape_t *shape = &fw->demand.ptr[s];
            uint64_t need[4] = {shape->milli_cpus, shape->mem_mib, shape->disk_mib, shape->gpus};
            if (shape->ports) continue; // this template does not hand out ports
            for (uint32_t k = 0; k < shape->count; k++) {
                size_t i = 0;
                while (i < n && !(left[i][0] >= need[0] && left[i][1] >= need[1] && left[i][2] >= need[2] && left[i][3] >= need[3])) i++;
                if (i == n) break;
                for (int q = 0; q < 4; q++) left[i][q] -= need[q];
                allocator_grant_t *g = NULL;
                for (size_t j = 0; j < ret->len; j++)
                    if (ret->ptr[j].framework == fw->id && ret->ptr[j].node == view->nodes.ptr[i].id) g = &ret->ptr[j];
                if (!g) {
                    if (ret->len == cap) ret->ptr = realloc(ret->ptr, (cap = cap ? cap * 2 : 8) * sizeof *ret->ptr);
                    g = &ret->ptr[ret->len++];
                    memset(g, 0, sizeof *g);
                    g->framework = fw->id;
                    g->node = view->nodes.ptr[i].id;
                }
                g->resources.milli_cpus += need[0];
                g->resources.mem_mib += need[1];
                g->resources.disk_mib += need[2];
                g->resources.gpus += (uint32_t)need[3];
            }
        }
    }
    free(left);
    allocator_cluster_view_free(view);
}
