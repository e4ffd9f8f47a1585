/*
 * system.c — what the machine offers: the kernel set in use and the number of
 * physical cores (threads beyond one per core only contend for the same FMA
 * units and memory bandwidth, so that is the default thread count).
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "trimlm.h"

#define MAX_CORES 4096 /* distinct (package, core) pairs remembered */

const char *tlm_isa_name(void) { return tlm_kernels_best()->name; }

/* ----------------------------------------------------- core counting */

typedef struct core_set {
    long pkg[MAX_CORES], core[MAX_CORES];
    int n;
} core_set;

static void core_set_add(core_set *s, long pkg, long core) {
    for (int i = 0; i < s->n; i++)
        if (s->pkg[i] == pkg && s->core[i] == core) return;
    if (s->n < MAX_CORES) {
        s->pkg[s->n] = pkg;
        s->core[s->n] = core;
        s->n++;
    }
}

static bool read_long_file(const char *path, long *out) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    bool ok = fscanf(f, "%ld", out) == 1;
    fclose(f);
    return ok;
}

/* sysfs topology of the CPUs this process may run on (respects taskset and
 * container cpusets). 0 when the topology files are missing. */
static int count_cores_sysfs(void) {
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof mask, &mask) != 0) return 0;
    static core_set set;
    set.n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &mask)) continue;
        char path[128];
        long pkg, core;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        if (!read_long_file(path, &pkg)) return 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        if (!read_long_file(path, &core)) return 0;
        core_set_add(&set, pkg, core);
    }
    return set.n;
}

/* "physical id" / "core id" pairs of /proc/cpuinfo (x86). 0 when absent. */
static int count_cores_cpuinfo(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0;
    static core_set set;
    set.n = 0;
    char line[512];
    long pkg = -1, core = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "physical id", 11)) {
            const char *colon = strchr(line, ':');
            if (colon) sscanf(colon + 1, "%ld", &pkg);
        } else if (!strncmp(line, "core id", 7)) {
            const char *colon = strchr(line, ':');
            if (colon) sscanf(colon + 1, "%ld", &core);
        } else if (line[0] == '\n') { /* end of one processor's block */
            if (pkg >= 0 && core >= 0) core_set_add(&set, pkg, core);
            pkg = core = -1;
        }
    }
    if (pkg >= 0 && core >= 0) core_set_add(&set, pkg, core);
    fclose(f);
    return set.n;
}

static int g_physical_cores;
static pthread_once_t g_cores_once = PTHREAD_ONCE_INIT;

static void detect_cores(void) {
    int n = count_cores_sysfs();
    if (n <= 0) n = count_cores_cpuinfo();
    if (n <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 ? (int)online : 1;
    }
    g_physical_cores = n;
}

int tlm_physical_cores(void) {
    pthread_once(&g_cores_once, detect_cores);
    return g_physical_cores;
}

int tlm_usable_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}
