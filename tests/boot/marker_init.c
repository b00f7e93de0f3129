/* /sbin/init of the test root: proves the initrd handed over to the right root, then powers off.
 * Prints one line on /dev/console:
 *   MKOSI-INITRD-ROOT-OK fs=<type of /> src=<device of /> label=<label file> uptime=<s since kernel start>
 * The uptime is the kernel-start → root-init time the boot matrix reports. Before it, the root's
 * kernel command line (what the UKI's .cmdline and its addons made of it):
 *   MKOSI-INITRD-ROOT-CMDLINE <contents of /proc/cmdline>
 * With /etc/marker-mode "hibernate": swapon /dev/vdb, hibernate to it (the kernel powers off); when an
 * initrd resumes the image, the write to /sys/power/state returns here and it prints
 *   MKOSI-INITRD-RESUMED uptime=<s>     (or MKOSI-INITRD-HIBERNATE-FAILED step=... errno=...) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/swap.h>
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

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return -1;
    int ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    int saved = errno;
    close(fd);
    errno = saved;
    return ok ? 0 : -1;
}

static void say(int con, const char *text) {
    if (con >= 0) {
        (void)!write(con, text, strlen(text));
        fsync(con);
    }
}

static void hibernate_cycle(int con) {
    char out[256];
    struct timespec ts;
    const char *step = "swapon";
    if (swapon("/dev/vdb", 0) == 0) {
        step = "disk";
        write_file("/sys/power/disk", "shutdown"); /* power off after writing the image, no ACPI S4 */
        say(con, "\nMKOSI-INITRD-HIBERNATING\n");
        if (write_file("/sys/power/state", "disk") == 0) {
            clock_gettime(CLOCK_BOOTTIME, &ts);
            snprintf(out, sizeof out, "\nMKOSI-INITRD-RESUMED uptime=%ld.%03ld\n", (long)ts.tv_sec,
                     ts.tv_nsec / 1000000);
            say(con, out);
            return;
        }
        step = "state";
    }
    snprintf(out, sizeof out, "\nMKOSI-INITRD-HIBERNATE-FAILED step=%s errno=%d (%s)\n", step, errno,
             strerror(errno));
    say(con, out);
}

int main(void) {
    struct timespec ts;
    char fs[256], src[256], label[256], mode[64], out[1024];
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
    read_line("/etc/marker-mode", mode, sizeof mode);
    if (strcmp(mode, "hibernate") == 0) {
        hibernate_cycle(con);
        sync();
        reboot(RB_POWER_OFF);
        return 0;
    }
    char cmdline[4096], line[4200];
    read_line("/proc/cmdline", cmdline, sizeof cmdline);
    snprintf(line, sizeof line, "\nMKOSI-INITRD-ROOT-CMDLINE %s\n", cmdline);
    say(con, line);
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
