/*
 * simkvm guest workload: PID 1 of the testbed guest's initramfs.
 *
 * Why a dedicated program: a live migration's behaviour is driven by how fast
 * the guest dirties memory and disk, so the testbed needs a guest whose rates
 * are set, not guessed. This program
 *
 *   1. mounts /proc, /sys and /dev, loads the virtio modules listed in
 *      /modules.order (Debian builds virtio_blk as a module),
 *   2. reads its workload from the kernel command line (simkvm.key=value),
 *   3. fills (1 - zero_fraction) of guest RAM with non-zero data, so that
 *      roughly zero_fraction of RAM stays zero pages for the migration,
 *   4. dirties one word per 4 KiB page of a working set at the requested rate
 *      (page touches per second x 4096 = dirty_rate), uniform random or
 *      sequential, paced in 10 ms slices,
 *   5. writes /dev/vda with O_DIRECT at the requested rate over a disk
 *      working set,
 *   6. keeps canaries in memory and on disk and verifies them every second,
 *   7. prints parseable lines on the console (ttyS0):
 *        SIMKVM READY boot=<id> key=value ...
 *        SIMKVM RATE t=<s> mem_Bps=<achieved> disk_Bps=<achieved> ...
 *        SIMKVM CHECK t=<s> mem=ok|FAIL disk=ok|FAIL|none
 *        SIMKVM ERROR <message>
 *
 * Only libc (static). Never exits: PID 1 exiting panics the kernel.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define PAGE 4096UL
#define SLICE_NS 10000000L          /* pacing slice: 10 ms */

/* Pace a loop in SLICE_NS steps on an absolute clock; a late slice restarts from now
 * instead of bursting to catch up (the rate is an average over whole seconds). */
static void sleep_for_period(struct timespec *next, long period_ns)
{
    next->tv_nsec += period_ns;
    while (next->tv_nsec >= 1000000000L) {
        next->tv_nsec -= 1000000000L;
        next->tv_sec++;
    }
    struct timespec cur;
    clock_gettime(CLOCK_MONOTONIC, &cur);
    if (cur.tv_sec > next->tv_sec || (cur.tv_sec == next->tv_sec && cur.tv_nsec > next->tv_nsec))
        *next = cur;
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL);
}

static void sleep_until_next_slice(struct timespec *next)
{
    sleep_for_period(next, SLICE_NS);
}
#define MAX_BACKLOG_SLICES 10       /* never catch up more than 100 ms of work */
#define MEM_CANARY_BYTES (1UL << 20)
#define DISK_CANARY_BYTES (1UL << 20)
#define PAGE_MAGIC 0x53494d4b564d5047ULL  /* "SIMKVMPG" */
#define DISK_MAGIC 0x53494d4b564d444bULL  /* "SIMKVMDK" */

struct workload {
    double dirty_rate;      /* bytes/s of pages touched */
    uint64_t wss;           /* bytes */
    int sequential;         /* 0 random, 1 sequential */
    double zero_fraction;   /* share of guest RAM left as zero pages */
    double disk_rate;       /* bytes/s written to /dev/vda */
    uint64_t disk_wss;      /* bytes */
    uint64_t io_size;       /* bytes per write */
};

static struct workload W = {
    .dirty_rate = 0, .wss = 64UL << 20, .sequential = 0, .zero_fraction = 0.5,
    .disk_rate = 0, .disk_wss = 16UL << 20, .io_size = 4096,
};

static struct timespec t0;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* Progress counters shared between threads (read without locks: a torn read
 * of a monotonically growing 64-bit counter cannot happen on x86-64). */
static volatile uint64_t mem_pages_done;
static volatile uint64_t disk_bytes_done;
static volatile int disk_error;

static uint8_t *arena;          /* working set lives at the start of the arena */
/* Writes each working-set page should have seen (kept apart from the pages).
 * A page whose counter disagrees lost a write: the migration did not resend
 * a page the guest dirtied. Only the dirtier thread touches both, and it also
 * runs the memory check, so the two never race. */
static uint32_t *expected;
static volatile int mem_check_due;
/* See flush_tlb(): regions whose write permission a thread toggles, one per
 * thread (two threads toggling one region could fault on each other's write). */
#define FLUSH_REGION_BYTES (64 * PAGE)
static uint8_t *flush_region;           /* the dirtier's */
static uint8_t *keeper_region;          /* the TLB keeper's */
static int tlb_flush_enabled = 1;
static long tlb_keeper_ns = 1000000L;   /* simkvm.tlb_flush_us: the keeper's period */
static char mem_result[96] = "ok";
static uint64_t wss_pages;
static uint8_t *mem_canary;
static int disk_fd = -1;
static uint64_t disk_size;
static uint64_t disk_blocks;    /* io_size blocks in the disk working set */

static uint8_t *new_flush_region(void)
{
    uint8_t *r = mmap(NULL, FLUSH_REGION_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED)
        return NULL;
    memset(r, 1, FLUSH_REGION_BYTES);
    return r;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
}

static void say(const char *fmt, ...)
{
    char buf[4096]; /* the READY line carries three 64-bin histograms */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    pthread_mutex_lock(&out_lock);
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = write(1, buf + off, n - off);
        if (w <= 0 && errno != EINTR)
            break;
        if (w > 0)
            off += w;
    }
    pthread_mutex_unlock(&out_lock);
}

static void hang(void)
{
    for (;;)
        pause();
}

/* splitmix64: cheap, deterministic, non-zero-ish pseudo random words. */
static inline uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return (x ^ (x >> 31)) | 1;   /* never zero */
}

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* ---- setup ---------------------------------------------------------------- */

static void mount_basics(void)
{
    mkdir("/proc", 0755);
    mkdir("/sys", 0755);
    mkdir("/dev", 0755);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    /* The kernel may not have given us a console (no /dev/console in the
     * initramfs): talk to the serial port directly. */
    int fd = open("/dev/ttyS0", O_WRONLY | O_NOCTTY);
    if (fd < 0)
        fd = open("/dev/console", O_WRONLY | O_NOCTTY);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
}

/* Load every module named in /modules.order (one file name a line, in
 * dependency order) with finit_module: no modprobe needed. */
static void load_modules(void)
{
    FILE *f = fopen("/modules.order", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0])
            continue;
        char path[300];
        snprintf(path, sizeof path, "/modules/%s", line);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            say("SIMKVM ERROR module %s missing: %s", line, strerror(errno));
            continue;
        }
        if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
            say("SIMKVM ERROR loading module %s: %s", line, strerror(errno));
        close(fd);
    }
    fclose(f);
}

static double parse_double(const char *s)
{
    return strtod(s, NULL);
}

/* simkvm.ip=A.B.C.D/N: bring up eth0 with that address (the kernel then answers
 * ARP and ICMP echo by itself: the testbed's prober measures the service
 * interruption of a migration from those replies). Empty: no network. */
static char guest_ip[32];

static void parse_cmdline(void)
{
    static char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = 0;
    for (char *tok = strtok(buf, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
        if (strncmp(tok, "simkvm.", 7) != 0)
            continue;
        char *key = tok + 7;
        char *val = strchr(key, '=');
        if (!val)
            continue;
        *val++ = 0;
        if (!strcmp(key, "dirty_rate"))
            W.dirty_rate = parse_double(val);
        else if (!strcmp(key, "wss"))
            W.wss = (uint64_t)parse_double(val);
        else if (!strcmp(key, "pattern"))
            W.sequential = !strcmp(val, "seq") || !strcmp(val, "sequential");
        else if (!strcmp(key, "zero_fraction"))
            W.zero_fraction = parse_double(val);
        else if (!strcmp(key, "disk_rate"))
            W.disk_rate = parse_double(val);
        else if (!strcmp(key, "disk_wss"))
            W.disk_wss = (uint64_t)parse_double(val);
        else if (!strcmp(key, "io_size"))
            W.io_size = (uint64_t)parse_double(val);
        else if (!strcmp(key, "tlb_flush"))
            tlb_flush_enabled = atoi(val) != 0;
        else if (!strcmp(key, "tlb_flush_us") && parse_double(val) >= 100)
            tlb_keeper_ns = (long)(parse_double(val) * 1000.0);
        else if (!strcmp(key, "ip"))
            snprintf(guest_ip, sizeof guest_ip, "%s", val);
        else
            say("SIMKVM ERROR unknown parameter simkvm.%s", key);
    }
    if (W.zero_fraction < 0)
        W.zero_fraction = 0;
    if (W.zero_fraction > 1)
        W.zero_fraction = 1;
    if (W.io_size < 512)
        W.io_size = 512;
    W.io_size = (W.io_size + 511) / 512 * 512;
}

static uint64_t meminfo_kb(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t v = 0;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtoull(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static void read_boot_id(char *out, size_t len)
{
    snprintf(out, len, "unknown");
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY);
    if (fd < 0)
        return;
    ssize_t n = read(fd, out, len - 1);
    close(fd);
    if (n > 0) {
        out[n] = 0;
        out[strcspn(out, "\n")] = 0;
    }
}

/* The kernel's transparent-huge-page mode ("always", "madvise", "never": the bracketed word of
 * /sys/kernel/mm/transparent_hugepage/enabled) and vm.min_free_kbytes: hugepage_init()
 * (mm/huge_memory.c) leaves THP off on guests with less than 512 MiB of RAM, and only with THP
 * on does khugepaged raise min_free_kbytes, the free (zero) reserve the host's model estimates. */
static void read_thp(char *mode, size_t len, uint64_t *min_free_kb)
{
    snprintf(mode, len, "unknown");
    *min_free_kb = 0;
    char line[128];
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (fgets(line, sizeof line, f)) {
            char *a = strchr(line, '['), *b = a ? strchr(a, ']') : NULL;
            if (a && b && (size_t)(b - a - 1) < len) {
                memcpy(mode, a + 1, (size_t)(b - a - 1));
                mode[b - a - 1] = 0;
            }
        }
        fclose(f);
    }
    f = fopen("/proc/sys/vm/min_free_kbytes", "r");
    if (f) {
        if (fgets(line, sizeof line, f))
            *min_free_kb = strtoull(line, NULL, 10);
        fclose(f);
    }
}

/* Allocate the arena and fill the non-zero part.  Returns bytes filled. */
static uint64_t kernel_used_bytes; /* MemTotal - MemAvailable before the fill: reported at READY */

static uint64_t setup_memory(uint64_t *arena_bytes_out, uint64_t *mem_total_out)
{
    uint64_t total = meminfo_kb("MemTotal") * 1024;
    uint64_t avail = meminfo_kb("MemAvailable") * 1024;
    uint64_t used = total > avail ? total - avail : 0;
    kernel_used_bytes = used;
    /* Leave headroom for the kernel, page tables and the console. */
    uint64_t margin = 24UL << 20;
    uint64_t allocatable = avail > margin ? avail - margin : 0;
    allocatable &= ~(PAGE - 1);

    /* Non-zero target over all of RAM, minus what the kernel already holds. */
    double target = (1.0 - W.zero_fraction) * (double)total - (double)used;
    uint64_t fill = target > 0 ? (uint64_t)target & ~(PAGE - 1) : 0;
    uint64_t wss = (W.wss + PAGE - 1) & ~(PAGE - 1);
    if (wss == 0)
        wss = PAGE;
    uint64_t arena_bytes = fill > wss ? fill : wss;
    if (arena_bytes > allocatable) {
        say("SIMKVM ERROR wanted %llu bytes of arena, only %llu allocatable; clamping",
            (unsigned long long)arena_bytes, (unsigned long long)allocatable);
        arena_bytes = allocatable;
        if (wss > arena_bytes)
            wss = arena_bytes;
        if (fill > arena_bytes)
            fill = arena_bytes;
    }
    W.wss = wss;
    wss_pages = wss / PAGE;

    arena = mmap(NULL, arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED) {
        say("SIMKVM ERROR mmap arena of %llu bytes: %s", (unsigned long long)arena_bytes, strerror(errno));
        hang();
    }
    /* Whole pages of pseudo-random words: non-zero and not compressible, as a
     * real guest's used memory looks to QEMU's zero-page check. */
    uint64_t *w = (uint64_t *)arena;
    for (uint64_t i = 0; i < fill / 8; i++)
        w[i] = mix(i);
    /* Mark every working-set page with its identity so the checker can tell
     * a page that moved from one that did not. */
    for (uint64_t p = 0; p < wss_pages; p++) {
        uint64_t *pg = (uint64_t *)(arena + p * PAGE);
        pg[0] = PAGE_MAGIC ^ p;
        pg[1] = 0;
    }
    expected = calloc(wss_pages, sizeof *expected);
    if (!expected) {
        say("SIMKVM ERROR cannot allocate %llu page counters", (unsigned long long)wss_pages);
        hang();
    }

    flush_region = new_flush_region();
    keeper_region = new_flush_region();

    mem_canary = mmap(NULL, MEM_CANARY_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem_canary == MAP_FAILED) {
        say("SIMKVM ERROR mmap canary: %s", strerror(errno));
        hang();
    }
    uint64_t *c = (uint64_t *)mem_canary;
    for (uint64_t i = 0; i < MEM_CANARY_BYTES / 8; i++)
        c[i] = mix(i ^ 0xc0ffee);

    *arena_bytes_out = arena_bytes;
    *mem_total_out = total;
    return fill;
}

/* Where pages sit in guest-physical memory: the share of a range's pages in
 * each 1/64 of RAM, bottom to top, in per mille ("-" when unknown).
 *
 * Why: QEMU walks its dirty bitmap in address order and carries on from where
 * it stopped after a bitmap sync, so the pages still unsent when a sync comes
 * are the ones just ahead of the walk; whether the working set is among them
 * decides how many newly dirtied pages were already pending, and so the
 * iteration count. Where the non-zero pages sit decides how fast the first
 * pass crosses each part of RAM (a zero page costs the rate limit a few bytes,
 * a normal one a page), so where it stands when pending first falls below the
 * threshold, and what the stop then sends. The model takes these as
 * vm.wss_layout and vm.zero_layout. Read from /proc/self/pagemap (page-frame
 * numbers need root: PID 1 is) against the highest "System RAM" address in
 * /proc/iomem.
 *
 * kernel_hist: where the pages this program does not own are in use, from
 * /proc/kpageflags (every frame not on the buddy allocator's free lists, minus
 * the arena's): the kernel's own memory (its image, wherever KASLR put it; the
 * memory map and the other early allocations memblock makes top-down; page
 * tables, slab and page cache). Measured on the testbed's idle guests, the first
 * pass crosses a dense stretch of them below the top of RAM that a kernel
 * spread evenly over RAM does not have. Free frames count as zero: a fresh
 * guest's free memory was never written (what it freed after writing is not). */
#define LAYOUT_BINS 64
#define KPF_BUDDY 10
#define KPF_NOPAGE 20
#define KPF_ZERO_PAGE 24
static char wss_hist[LAYOUT_BINS * 5 + 1] = "-";
static char arena_hist[LAYOUT_BINS * 5 + 1] = "-";
static char kernel_hist[LAYOUT_BINS * 5 + 1] = "-";
static uint64_t kernel_pages; /* frames in use besides the arena (0: unknown) */

static uint64_t ram_top_bytes(void)
{
    FILE *f = fopen("/proc/iomem", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t top = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long lo, hi;
        if (line[0] != ' ' && strstr(line, "System RAM") && sscanf(line, "%llx-%llx", &lo, &hi) == 2 && hi + 1 > top)
            top = hi + 1;
    }
    fclose(f);
    return top;
}

static uint64_t bin_of(uint64_t pfn, uint64_t top)
{
    uint64_t bin = pfn * PAGE * LAYOUT_BINS / top;
    return bin < LAYOUT_BINS ? bin : LAYOUT_BINS - 1;
}

static void format_hist(const uint64_t *bins, uint64_t n, char *out, size_t out_size)
{
    if (!n)
        return;
    char *o = out;
    for (int b = 0; b < LAYOUT_BINS; b++)
        o += snprintf(o, out + out_size - o, "%s%d", b ? "," : "", (int)(1000.0 * bins[b] / n + 0.5));
}

/* Pages of [start, start + pages) per bin (added to bins); returns how many were found. */
static uint64_t page_bins(int pagemap, uint64_t top, const uint8_t *start, uint64_t pages, uint64_t *bins)
{
    uint64_t n = 0;
    for (uint64_t p = 0; p < pages; p++) {
        uint64_t entry;
        uint64_t vpn = ((uintptr_t)start + p * PAGE) / PAGE;
        if (pread(pagemap, &entry, sizeof entry, (off_t)(vpn * sizeof entry)) != sizeof entry)
            return 0;
        uint64_t pfn = entry & ((1ULL << 55) - 1);
        if (!(entry >> 63) || pfn == 0) /* not present, or frame numbers hidden from us */
            continue;
        bins[bin_of(pfn, top)]++;
        n++;
    }
    return n;
}

/* Frames in use per bin (kpageflags): not free, not a hole, not the shared zero page. */
static uint64_t used_bins(uint64_t top, uint64_t *bins)
{
    int fd = open("/proc/kpageflags", O_RDONLY);
    if (fd < 0)
        return 0;
    enum { CHUNK = 4096 };
    static uint64_t flags[CHUNK];
    uint64_t frames = top / PAGE, n = 0;
    for (uint64_t pfn = 0; pfn < frames; pfn += CHUNK) {
        size_t want = (size_t)(frames - pfn < CHUNK ? frames - pfn : CHUNK) * sizeof flags[0];
        ssize_t got = pread(fd, flags, want, (off_t)(pfn * sizeof flags[0]));
        if (got <= 0) {
            n = 0;
            break;
        }
        for (uint64_t i = 0; i < (uint64_t)got / sizeof flags[0]; i++) {
            uint64_t f = flags[i];
            if (f & ((1ULL << KPF_BUDDY) | (1ULL << KPF_NOPAGE) | (1ULL << KPF_ZERO_PAGE)))
                continue;
            bins[bin_of(pfn + i, top)]++;
            n++;
        }
    }
    close(fd);
    return n;
}

static void measure_layout(uint64_t arena_bytes)
{
    uint64_t top = ram_top_bytes();
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (top && fd >= 0) {
        uint64_t wss_b[LAYOUT_BINS] = {0}, arena_b[LAYOUT_BINS] = {0}, used_b[LAYOUT_BINS] = {0};
        format_hist(wss_b, page_bins(fd, top, arena, wss_pages, wss_b), wss_hist, sizeof wss_hist);
        uint64_t n_arena = page_bins(fd, top, arena, arena_bytes / PAGE, arena_b);
        format_hist(arena_b, n_arena, arena_hist, sizeof arena_hist);
        if (n_arena && used_bins(top, used_b)) {
            uint64_t kernel_b[LAYOUT_BINS], n = 0;
            for (int b = 0; b < LAYOUT_BINS; b++) {
                kernel_b[b] = used_b[b] > arena_b[b] ? used_b[b] - arena_b[b] : 0;
                n += kernel_b[b];
            }
            kernel_pages = n;
            format_hist(kernel_b, n, kernel_hist, sizeof kernel_hist);
        }
    }
    if (fd >= 0)
        close(fd);
}

/* ---- network --------------------------------------------------------------- */

static int set_if(int s, unsigned long req, struct ifreq *ifr)
{
    return ioctl(s, req, ifr);
}

static void setup_network(void)
{
    if (!guest_ip[0])
        return;
    char addr[32];
    int prefix = 24;
    snprintf(addr, sizeof addr, "%s", guest_ip);
    char *slash = strchr(addr, '/');
    if (slash) {
        *slash = 0;
        prefix = atoi(slash + 1);
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        say("SIMKVM ERROR network socket: %s", strerror(errno));
        return;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (set_if(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP;
        set_if(s, SIOCSIFFLAGS, &ifr);
    }
    /* virtio_net was just loaded: eth0 may take a moment to appear. */
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    int tries = 0;
    while (set_if(s, SIOCGIFFLAGS, &ifr) != 0 && tries++ < 100)
        usleep(50000);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1 || set_if(s, SIOCSIFADDR, &ifr) != 0) {
        say("SIMKVM ERROR cannot set eth0 address %s: %s", guest_ip, strerror(errno));
        close(s);
        return;
    }
    sin->sin_addr.s_addr = htonl(prefix <= 0 ? 0 : 0xffffffffu << (32 - prefix));
    set_if(s, SIOCSIFNETMASK, &ifr);
    if (set_if(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (set_if(s, SIOCSIFFLAGS, &ifr) != 0)
            say("SIMKVM ERROR cannot bring eth0 up: %s", strerror(errno));
    }
    close(s);
}

/* ---- disk ------------------------------------------------------------------ */

static void *aligned(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, PAGE, bytes) != 0)
        return NULL;
    return p;
}

static int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fd, (const char *)buf + done, len - done, off + done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        done += w;
    }
    return 0;
}

static int pread_all(int fd, void *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *)buf + done, len - done, off + done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += r;
    }
    return 0;
}

static void fill_disk_canary(uint64_t *buf)
{
    for (uint64_t i = 0; i < DISK_CANARY_BYTES / 8; i++)
        buf[i] = mix(i ^ 0xd15c);
}

/* Open /dev/vda, write the canary at its start.  Returns 0 if a disk is usable. */
static int setup_disk(void)
{
    /* The virtio disk can appear a little after the module loads. */
    for (int i = 0; i < 200 && access("/dev/vda", F_OK) != 0; i++)
        usleep(10000);
    disk_fd = open("/dev/vda", O_RDWR | O_DIRECT | O_CLOEXEC);
    if (disk_fd < 0)
        return -1;
    if (ioctl(disk_fd, BLKGETSIZE64, &disk_size) != 0 || disk_size < DISK_CANARY_BYTES + W.io_size) {
        say("SIMKVM ERROR /dev/vda too small or unreadable (%llu bytes)", (unsigned long long)disk_size);
        close(disk_fd);
        disk_fd = -1;
        return -1;
    }
    uint64_t room = disk_size - DISK_CANARY_BYTES;
    if (W.disk_wss > room)
        W.disk_wss = room;
    disk_blocks = W.disk_wss / W.io_size;
    if (disk_blocks == 0)
        disk_blocks = 1;
    W.disk_wss = disk_blocks * W.io_size;

    uint64_t *buf = aligned(DISK_CANARY_BYTES);
    if (!buf)
        return -1;
    fill_disk_canary(buf);
    if (pwrite_all(disk_fd, buf, DISK_CANARY_BYTES, 0) != 0 || fdatasync(disk_fd) != 0) {
        say("SIMKVM ERROR writing disk canary: %s", strerror(errno));
        free(buf);
        close(disk_fd);
        disk_fd = -1;
        return -1;
    }
    free(buf);
    return 0;
}

/* Disk writer thread: io_size writes at disk_rate over the disk working set,
 * each block stamped with its index so the checker can verify a sample. */
static void *disk_writer(void *unused)
{
    (void)unused;
    uint64_t *buf = aligned(W.io_size);
    if (!buf) {
        disk_error = 1;
        return NULL;
    }
    for (uint64_t i = 0; i < W.io_size / 8; i++)
        buf[i] = mix(i ^ 0xb10c);
    uint64_t seed = 0x1234567ULL;
    uint64_t next_seq = 0;
    uint64_t written = 0;
    double start = now_s();
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        double elapsed = now_s() - start;
        double due = W.disk_rate * elapsed;
        double max_backlog = W.disk_rate * (MAX_BACKLOG_SLICES * SLICE_NS / 1e9) + W.io_size;
        if (due - (double)written > max_backlog) {
            /* We fell behind (guest paused, host slow): do not burst. */
            written = (uint64_t)(due - max_backlog);
        }
        while ((double)written + W.io_size <= due) {
            uint64_t blk = W.sequential ? next_seq++ % disk_blocks : xorshift(&seed) % disk_blocks;
            buf[0] = DISK_MAGIC ^ blk;
            buf[1] = disk_bytes_done;
            off_t off = (off_t)(DISK_CANARY_BYTES + blk * W.io_size);
            if (pwrite_all(disk_fd, buf, W.io_size, off) != 0) {
                disk_error = errno ? errno : EIO;
                say("SIMKVM ERROR disk write at %lld: %s", (long long)off, strerror(errno));
                sleep(1);
                break;
            }
            written += W.io_size;
            disk_bytes_done += W.io_size;
        }
        sleep_until_next_slice(&next);
    }
    return NULL;
}

/* ---- memory dirtier ------------------------------------------------------- */

/* Make the guest kernel flush its whole TLB (revoking write access on more
 * pages than its single-page-flush ceiling does that, reloading CR3).
 *
 * Why: QEMU's TCG (seen with 7.2) does not re-arm its per-vCPU "notdirty"
 * TLB flags when migration syncs the dirty bitmap, so writes through TLB
 * entries filled before the sync are not logged and those pages reach the
 * destination stale (the guest then crashes or this program reports
 * stale_pages). A guest TLB flush makes QEMU drop those entries, so the next
 * write to each page is logged again. Costs two syscalls and 64 page writes
 * per flush (those pages are dirty at every sync: the model's
 * vm.background_hot); simkvm.tlb_flush=0 turns it off (e.g. under KVM, to see
 * the bug: TCG only).
 */
static void flush_tlb(uint8_t *region)
{
    if (!tlb_flush_enabled || !region)
        return;
    mprotect(region, FLUSH_REGION_BYTES, PROT_READ);
    mprotect(region, FLUSH_REGION_BYTES, PROT_READ | PROT_WRITE);
    for (uint64_t off = 0; off < FLUSH_REGION_BYTES; off += PAGE)
        ((volatile uint8_t *)region)[off] = 1;   /* keep the PTEs present and writable */
}

static const char *check_memory(char *why, size_t len);

/* Every guest runs this thread as well as the dirtier's flush after each of its
 * 10 ms slices (the dirtier thread runs with a zero rate too, for that). The
 * kernel writes memory at any time (timers, I/O completions, the network
 * probe's replies), and a write through a TLB entry armed before a sync is lost
 * if its page was sent after that sync. Measured on the testbed (a disk-writing
 * guest, 4 MiB/s sequential, 48 MiB/s link): the dirtier's flush alone, 1 in 8
 * migrations left a stale kernel page on the destination (a timer list: panic);
 * this thread alone (1 ms), 1 in 8; both, none in 39. The period is
 * simkvm.tlb_flush_us. */
static void *tlb_keeper(void *unused)
{
    (void)unused;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        flush_tlb(keeper_region);
        sleep_for_period(&next, tlb_keeper_ns);
    }
    return NULL;
}

static void *mem_dirtier(void *unused)
{
    (void)unused;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    uint64_t next_page = 0;
    uint64_t touched = 0;
    double start = now_s();
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    double pages_per_s = W.dirty_rate / (double)PAGE;
    for (;;) {
        double elapsed = now_s() - start;
        double due = pages_per_s * elapsed;
        double max_backlog = pages_per_s * (MAX_BACKLOG_SLICES * SLICE_NS / 1e9) + 1;
        if (due - (double)touched > max_backlog)
            touched = (uint64_t)(due - max_backlog);
        uint64_t todo = due > (double)touched ? (uint64_t)(due - (double)touched) : 0;
        for (uint64_t i = 0; i < todo; i++) {
            uint64_t p = W.sequential ? next_page++ % wss_pages : xorshift(&seed) % wss_pages;
            /* One write per page: word 1 counts writes, word 0 keeps identity. */
            ((volatile uint64_t *)(arena + p * PAGE))[1] += 1;
            expected[p] += 1;
        }
        if (mem_check_due) {
            char why[64] = "";
            const char *r = check_memory(why, sizeof why);
            snprintf(mem_result, sizeof mem_result, "%s%s%s", r, why[0] ? " mem_why=" : "", why);
            mem_check_due = 0;
        }
        touched += todo;
        mem_pages_done += todo;
        flush_tlb(flush_region);
        sleep_until_next_slice(&next);
    }
    return NULL;
}

/* ---- checks ---------------------------------------------------------------- */

static const char *check_memory(char *why, size_t len)
{
    const uint64_t *c = (const uint64_t *)mem_canary;
    for (uint64_t i = 0; i < MEM_CANARY_BYTES / 8; i++) {
        if (c[i] != mix(i ^ 0xc0ffee)) {
            snprintf(why, len, "canary_word=%llu", (unsigned long long)i);
            return "FAIL";
        }
    }
    uint64_t stale = 0, first = 0;
    for (uint64_t p = 0; p < wss_pages; p++) {
        const volatile uint64_t *pg = (const volatile uint64_t *)(arena + p * PAGE);
        if (pg[0] != (PAGE_MAGIC ^ p)) {
            snprintf(why, len, "wss_page=%llu", (unsigned long long)p);
            return "FAIL";
        }
        if ((uint32_t)pg[1] != expected[p] && stale++ == 0)
            first = p;
    }
    if (stale) {
        snprintf(why, len, "stale_pages=%llu first=%llu", (unsigned long long)stale, (unsigned long long)first);
        return "FAIL";
    }
    return "ok";
}

static const char *check_disk(char *why, size_t len, uint64_t *seed)
{
    if (disk_fd < 0)
        return "none";
    if (disk_error) {
        snprintf(why, len, "write_errno=%d", disk_error);
        return "FAIL";
    }
    static uint64_t *buf;
    static uint64_t *blk;
    if (!buf)
        buf = aligned(DISK_CANARY_BYTES);
    if (!blk)
        blk = aligned(W.io_size);
    if (!buf || !blk)
        return "FAIL";
    if (pread_all(disk_fd, buf, DISK_CANARY_BYTES, 0) != 0) {
        snprintf(why, len, "canary_read_errno=%d", errno);
        return "FAIL";
    }
    for (uint64_t i = 0; i < DISK_CANARY_BYTES / 8; i++) {
        if (buf[i] != mix(i ^ 0xd15c)) {
            snprintf(why, len, "canary_word=%llu", (unsigned long long)i);
            return "FAIL";
        }
    }
    /* A few random working-set blocks: never written (all zero) or stamped
     * with their own index. */
    for (int k = 0; k < 8; k++) {
        uint64_t b = xorshift(seed) % disk_blocks;
        if (pread_all(disk_fd, blk, W.io_size, (off_t)(DISK_CANARY_BYTES + b * W.io_size)) != 0) {
            snprintf(why, len, "block_read_errno=%d", errno);
            return "FAIL";
        }
        if (blk[0] != 0 && blk[0] != (DISK_MAGIC ^ b)) {
            snprintf(why, len, "block=%llu", (unsigned long long)b);
            return "FAIL";
        }
    }
    return "ok";
}

/* ---- main ------------------------------------------------------------------ */

int main(void)
{
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mount_basics();
    say("SIMKVM BOOT");
    load_modules();
    parse_cmdline();
    setup_network();

    char boot_id[64];
    read_boot_id(boot_id, sizeof boot_id);
    double uptime_s = 0;
    FILE *up = fopen("/proc/uptime", "r");
    if (up) {
        if (fscanf(up, "%lf", &uptime_s) != 1)
            uptime_s = 0;
        fclose(up);
    }

    double fill_start = now_s();
    uint64_t arena_bytes = 0, mem_total = 0;
    uint64_t filled = setup_memory(&arena_bytes, &mem_total);
    double fill_s = now_s() - fill_start;
    measure_layout(arena_bytes);

    int have_disk = setup_disk() == 0;
    if (!have_disk && W.disk_rate > 0)
        say("SIMKVM ERROR disk_rate=%.0f requested but /dev/vda is not usable", W.disk_rate);

    pthread_t th;
    /* with a zero rate the dirtier only flushes the TLB (see tlb_keeper) */
    if ((W.dirty_rate > 0 || tlb_flush_enabled) && pthread_create(&th, NULL, mem_dirtier, NULL) != 0)
        say("SIMKVM ERROR cannot start the memory dirtier");
    if (tlb_flush_enabled && pthread_create(&th, NULL, tlb_keeper, NULL) != 0)
        say("SIMKVM ERROR cannot start the TLB keeper");
    if (have_disk && W.disk_rate > 0 && pthread_create(&th, NULL, disk_writer, NULL) != 0)
        say("SIMKVM ERROR cannot start the disk writer");

    char thp[16];
    uint64_t min_free_kb;
    read_thp(thp, sizeof thp, &min_free_kb);
    say("SIMKVM READY boot=%s t=%.3f kernel_uptime_s=%.2f mem_total=%llu used=%llu thp=%s min_free_kb=%llu "
        "arena=%llu filled=%llu fill_s=%.3f "
        "wss=%llu pattern=%s dirty_rate=%.0f zero_fraction=%.4f "
        "disk=%s disk_size=%llu disk_wss=%llu io_size=%llu disk_rate=%.0f wss_hist=%s arena_hist=%s kernel_hist=%s kernel_pages=%llu ip=%s",
        boot_id, now_s(), uptime_s + now_s(), (unsigned long long)mem_total, (unsigned long long)kernel_used_bytes,
        thp, (unsigned long long)min_free_kb,
        (unsigned long long)arena_bytes,
        (unsigned long long)filled, fill_s, (unsigned long long)W.wss, W.sequential ? "seq" : "random",
        W.dirty_rate, W.zero_fraction, have_disk ? "/dev/vda" : "none",
        (unsigned long long)disk_size, (unsigned long long)(have_disk ? W.disk_wss : 0),
        (unsigned long long)W.io_size, W.disk_rate, wss_hist, arena_hist, kernel_hist, (unsigned long long)kernel_pages,
        guest_ip[0] ? guest_ip : "none");

    /* Reporter: once a second, achieved rates; then the canary checks. */
    uint64_t seed = 0xfeedULL;
    double last_t = now_s();
    uint64_t last_pages = mem_pages_done, last_disk = disk_bytes_done;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        next.tv_sec += 1;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        double t = now_s();
        uint64_t pages = mem_pages_done, disk = disk_bytes_done;
        double dt = t - last_t;
        if (dt <= 0)
            dt = 1e-9;
        say("SIMKVM RATE t=%.3f dt=%.3f mem_Bps=%.0f disk_Bps=%.0f mem_target_Bps=%.0f disk_target_Bps=%.0f",
            t, dt, (double)(pages - last_pages) * PAGE / dt, (double)(disk - last_disk) / dt,
            W.dirty_rate, have_disk ? W.disk_rate : 0.0);
        last_t = t;
        last_pages = pages;
        last_disk = disk;

        char mem[96], dwhy[64] = "";
        if (W.dirty_rate > 0) {
            /* The dirtier checks between its slices; take its last verdict
             * and ask for a fresh one. */
            snprintf(mem, sizeof mem, "%s", mem_result);
            mem_check_due = 1;
        } else {
            char mwhy[64] = "";
            const char *m = check_memory(mwhy, sizeof mwhy);
            snprintf(mem, sizeof mem, "%s%s%s", m, mwhy[0] ? " mem_why=" : "", mwhy);
        }
        const char *d = check_disk(dwhy, sizeof dwhy, &seed);
        say("SIMKVM CHECK t=%.3f mem=%s disk=%s%s%s", now_s(), mem, d, dwhy[0] ? " disk_why=" : "", dwhy);
        /* Re-anchor the schedule after a long pause (migration switchover). */
        struct timespec cur;
        clock_gettime(CLOCK_MONOTONIC, &cur);
        if (cur.tv_sec > next.tv_sec + 1)
            next = cur;
    }
    hang();
    return 0;
}
