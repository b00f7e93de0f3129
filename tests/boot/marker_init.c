/* /sbin/init of the test root: proves the initrd handed over to the right root, then powers off.
 * Prints one line on /dev/console:
 *   MKOSI-INITRD-ROOT-OK fs=<type of /> src=<device of /> label=<label file> uptime=<s since kernel start>
 * The uptime is the kernel-start → root-init time the boot matrix reports. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void root_mount(char *fs, char *src, size_t n) { /* both n bytes */
    FILE *f = fopen("/proc/self/mounts", "r");
    char line[1024], dev[256], mnt[256], type[64];
    snprintf(fs, n, "?");
    snprintf(src, n, "?");
    if (!f)
        return;
    /* The last "/" line wins: it is the one stacked on top. */
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%255s %255s %63s", dev, mnt, type) == 3 && strcmp(mnt, "/") == 0) {
            snprintf(fs, n, "%s", type);
            snprintf(src, n, "%s", dev);
        }
    fclose(f);
}

static void read_line(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    snprintf(buf, n, "?");
    if (f) {
        if (fgets(buf, (int)n, f))
            buf[strcspn(buf, "\n")] = 0;
        fclose(f);
    }
}

int main(void) {
    struct timespec ts;
    char fs[256], src[256], label[256], out[1024];
    clock_gettime(CLOCK_BOOTTIME, &ts);
    mkdir("/proc", 0555);
    mount("proc", "/proc", "proc", 0, NULL); /* fails harmlessly when the initrd moved it here */
    int con = open("/dev/console", O_WRONLY | O_NOCTTY);
    if (con < 0) {
        mkdir("/dev", 0755);
        mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
        con = open("/dev/console", O_WRONLY | O_NOCTTY);
    }
    root_mount(fs, src, sizeof fs);
    read_line("/etc/marker-label", label, sizeof label);
    int len = snprintf(out, sizeof out, "\nMKOSI-INITRD-ROOT-OK fs=%s src=%s label=%s uptime=%ld.%03ld\n", fs,
                       src, label, (long)ts.tv_sec, ts.tv_nsec / 1000000);
    if (con >= 0) {
        (void)!write(con, out, (size_t)len);
        fsync(con);
    }
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
