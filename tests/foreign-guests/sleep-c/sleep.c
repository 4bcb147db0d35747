// Test guest: an allocator in C whose `allocate` sleeps for 60 s with nanosleep (wasi-libc turns it into a
// WASI clock and a poll). The host must stop it at its deadline and keep serving meanwhile.

#include <stdlib.h>
#include <time.h>

#include "allocator.h"

bool exports_allocator_init(allocator_string_t *config, allocator_string_t *err) {
    (void)err;
    allocator_string_free(config);
    return true;
}

void exports_allocator_allocate(allocator_cluster_view_t *view, allocator_list_grant_t *ret) {
    struct timespec minute = {.tv_sec = 60, .tv_nsec = 0};
    nanosleep(&minute, NULL);
    ret->ptr = NULL;
    ret->len = 0;
    allocator_cluster_view_free(view);
}
