/*
 * edge_bridge_frame_example.c - a tiny encoder: writes a few frames to stdout.
 *
 *   cc -std=c99 -Wall -Wextra -I firmware_interface/include \
 *      firmware_interface/include/edge_bridge_frame_example.c -o eb_example && ./eb_example > frames.bin
 *
 * On a wearable, replace fwrite with the UART or socket write, fill samples from the ADC, and send one
 * frame every 10 to 50 ms. tests/firmware/test_c_header.py builds this file and checks, byte for byte, that
 * Python's encoder produces the same frames and that the decoder reads them back.
 */
#include <stdio.h>

#include "edge_bridge_frame.h"

/* Deterministic test pattern covering negative and extreme values (the test computes the same). */
static int32_t pattern(unsigned fmt, uint32_t seq, unsigned s, unsigned c) {
    long long v;
    if (fmt == EB_FMT_INT16) {
        v = ((long long)s * 1103 + (long long)c * 7919 + (long long)seq * 31) % 65536 - 32768;
    } else {
        v = ((long long)s * 1103515 + (long long)c * 12345 + (long long)seq * 777) % 16777216 - 8388608;
    }
    return (int32_t)v;
}

int main(void) {
    static uint8_t buf[EB_MAX_FRAME_SIZE];
    static int32_t samples[EB_MAX_CHANNELS * 16];
    const float scales16[2] = {0.001f, 2.5f};
    const uint8_t mods16[2] = {EB_MOD_ECG, EB_MOD_PPG};
    const float scales24[3] = {0.0625f, 1e-4f, 3.0f};
    const uint8_t mods24[3] = {EB_MOD_EEG, EB_MOD_EMG, EB_MOD_UNKNOWN};
    eb_frame f;

    /* three int16 frames: 2 channels x 5 samples at 250 Hz */
    for (uint32_t seq = 0; seq < 3; seq++) {
        for (unsigned s = 0; s < 5; s++)
            for (unsigned c = 0; c < 2; c++) samples[s * 2 + c] = pattern(EB_FMT_INT16, seq, s, c);
        f.seq = seq;
        f.timestamp_us = 1000000ull + 20000ull * seq;
        f.sampling_rate = 250.0f;
        f.sample_format = EB_FMT_INT16;
        f.n_channels = 2;
        f.n_samples = 5;
        f.scales = scales16;
        f.modalities = mods16;
        f.samples = samples;
        size_t n = eb_frame_encode(buf, sizeof buf, &f);
        if (n == 0 || fwrite(buf, 1, n, stdout) != n) return 1;
    }
    /* two int24 frames: 3 channels x 4 samples at 128 Hz, sequence numbers wrapping past 2^32 - 1 */
    for (uint32_t k = 0; k < 2; k++) {
        uint32_t seq = 0xFFFFFFFFu + k; /* 4294967295, then 0 */
        for (unsigned s = 0; s < 4; s++)
            for (unsigned c = 0; c < 3; c++) samples[s * 3 + c] = pattern(EB_FMT_INT24, seq, s, c);
        f.seq = seq;
        f.timestamp_us = 0xFFFFFFFF00000000ull + 31250ull * k;
        f.sampling_rate = 128.0f;
        f.sample_format = EB_FMT_INT24;
        f.n_channels = 3;
        f.n_samples = 4;
        f.scales = scales24;
        f.modalities = mods24;
        f.samples = samples;
        size_t n = eb_frame_encode(buf, sizeof buf, &f);
        if (n == 0 || fwrite(buf, 1, n, stdout) != n) return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
