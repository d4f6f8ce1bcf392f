/* SPDX-License-Identifier: MIT */
/*
 * replay_main.c: a main() for fuzz harnesses in builds without libFuzzer. It runs
 * LLVMFuzzerTestOneInput once on every regular file of the directory given as argv[1] (in name
 * order, after LLVMFuzzerInitialize when the harness defines it), so every build replays the
 * committed corpus as a regression test. Exits non-zero when the directory cannot be read or
 * holds no input.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads a whole file into a fresh allocation of exactly its size (so ASan sees over-reads). */
static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *data = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *p = realloc(data, cap);
            if (!p) {
                free(data);
                fclose(f);
                return NULL;
            }
            data = p;
        }
        size_t k = fread(data + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(data);
        return NULL;
    }
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(data);
        return NULL;
    }
    memcpy(exact, data, n);
    free(data);
    *len = n;
    return exact;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);

    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return 1;
    }
    char **names = NULL;
    size_t n_names = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n_names == cap) {
            cap = cap ? cap * 2 : 64;
            char **p = realloc(names, cap * sizeof(*names));
            if (!p) {
                fprintf(stderr, "out of memory\n");
                return 1;
            }
            names = p;
        }
        names[n_names] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        if (!names[n_names]) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        sprintf(names[n_names], "%s/%s", dir, e->d_name);
        n_names++;
    }
    closedir(d);
    if (n_names > 1)
        qsort(names, n_names, sizeof(*names), cmp_names);

    size_t ran = 0;
    int rc = 0;
    for (size_t i = 0; i < n_names; i++) {
        struct stat st;
        if (stat(names[i], &st) != 0 || !S_ISREG(st.st_mode)) {
            free(names[i]);
            continue;
        }
        size_t len = 0;
        uint8_t *data = read_file(names[i], &len);
        if (!data) {
            perror(names[i]);
            rc = 1;
        } else {
            LLVMFuzzerTestOneInput(data, len);
            free(data);
            ran++;
        }
        free(names[i]);
    }
    free(names);
    printf("%s: %zu inputs ran\n", dir, ran);
    if (ran == 0) {
        fprintf(stderr, "%s: no inputs\n", dir);
        return 1;
    }
    return rc;
}
