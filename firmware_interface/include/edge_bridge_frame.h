/*
 * edge_bridge_frame.h - the edge-bridge frame protocol, version 1, for C firmware.
 *
 * A wearable that is not a BrainFlow board sends its samples to edge-bridge as a stream of frames over a
 * serial port or TCP. This header is the reference layout (the Python twin is firmware_interface/frames.py,
 * and a test encodes frames with this file and decodes them in Python byte for byte). Header-only, C99, no
 * allocation, no dependencies beyond <stdint.h>, <stddef.h> and <string.h>.
 *
 * Byte order: every multi-byte field is LITTLE-ENDIAN, written byte by byte below, so the code is correct
 * on big-endian MCUs too. float32 fields are IEEE-754 binary32 (every MCU with an FPU or soft-float libc).
 *
 *   offset    size      field
 *   0         2         sync word: bytes 0xEB 0xB1
 *   2         1         protocol version: 1
 *   3         1         sample format: 1 = int16, 2 = int24 (two's complement)
 *   4         4         sequence number, uint32, +1 per frame, wraps at 2^32
 *   8         8         device timestamp of the first sample, uint64 microseconds
 *   16        4         sampling rate, float32 Hz
 *   20        1         channel count C, 1..64
 *   21        1         reserved, must be 0
 *   22        2         samples per channel S, uint16, 1..1024
 *   24        4*C       per-channel scale, float32: physical value = count * scale
 *   24+4C     C         per-channel modality code: 0 unknown, 1 ecg, 2 ppg, 3 eeg, 4 emg, 5 resp, 6 eda, 7 acc
 *   24+5C     S*C*B     samples, sample-major (s0c0 s0c1 ... s1c0 ...), B = 2 (int16) or 3 (int24) bytes
 *   end-4     4         CRC-32 of all preceding bytes of the frame (the zlib/Ethernet CRC: reflected
 *                       polynomial 0xEDB88320, init 0xFFFFFFFF, final xor 0xFFFFFFFF)
 *
 * Whole frame <= EB_MAX_FRAME_SIZE (16384) bytes. The receiver resynchronises on the sync word and drops
 * frames whose CRC fails, so a lost byte costs one frame, never the stream. Keep frames short (10 to 50 ms
 * of samples) so a corrupted frame loses little.
 */
#ifndef EDGE_BRIDGE_FRAME_H
#define EDGE_BRIDGE_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EB_SYNC0 0xEBu
#define EB_SYNC1 0xB1u
#define EB_VERSION 1u
#define EB_FMT_INT16 1u
#define EB_FMT_INT24 2u
#define EB_MAX_CHANNELS 64u
#define EB_MAX_SAMPLES 1024u
#define EB_MAX_FRAME_SIZE 16384u

/* byte offsets of the fixed header */
#define EB_OFF_SYNC 0u
#define EB_OFF_VERSION 2u
#define EB_OFF_FORMAT 3u
#define EB_OFF_SEQ 4u
#define EB_OFF_TIMESTAMP 8u
#define EB_OFF_RATE 16u
#define EB_OFF_NCHANNELS 20u
#define EB_OFF_RESERVED 21u
#define EB_OFF_NSAMPLES 22u
#define EB_HEADER_SIZE 24u
#define EB_CRC_SIZE 4u

enum eb_modality {
    EB_MOD_UNKNOWN = 0, EB_MOD_ECG = 1, EB_MOD_PPG = 2, EB_MOD_EEG = 3,
    EB_MOD_EMG = 4, EB_MOD_RESP = 5, EB_MOD_EDA = 6, EB_MOD_ACC = 7
};

/* What one frame carries (not the wire layout: eb_frame_encode writes that). */
typedef struct {
    uint32_t seq;
    uint64_t timestamp_us;
    float sampling_rate;
    uint8_t sample_format;      /* EB_FMT_INT16 or EB_FMT_INT24 */
    uint8_t n_channels;         /* 1..EB_MAX_CHANNELS */
    uint16_t n_samples;         /* per channel, 1..EB_MAX_SAMPLES */
    const float *scales;        /* n_channels entries */
    const uint8_t *modalities;  /* n_channels entries, enum eb_modality */
    const int32_t *samples;     /* n_samples * n_channels, sample-major: samples[s * n_channels + c] */
} eb_frame;

static inline uint32_t eb_crc32(const uint8_t *data, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return crc ^ 0xFFFFFFFFu;
}

static inline void eb_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static inline void eb_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline void eb_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline void eb_put_f32(uint8_t *p, float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    eb_put_u32(p, bits);
}

/* Bytes of a whole frame; 0 if the layout is outside the protocol's limits. */
static inline size_t eb_frame_size(unsigned n_channels, unsigned n_samples, unsigned sample_format) {
    size_t b = sample_format == EB_FMT_INT16 ? 2u : sample_format == EB_FMT_INT24 ? 3u : 0u;
    size_t size;
    if (b == 0 || n_channels < 1 || n_channels > EB_MAX_CHANNELS || n_samples < 1 || n_samples > EB_MAX_SAMPLES)
        return 0;
    size = EB_HEADER_SIZE + 5u * n_channels + (size_t)n_samples * n_channels * b + EB_CRC_SIZE;
    return size <= EB_MAX_FRAME_SIZE ? size : 0;
}

/*
 * Encode one frame into out (capacity cap). Returns the bytes written, or 0 when the layout is invalid,
 * out is too small, or a sample does not fit the format (int16: -32768..32767, int24: -8388608..8388607).
 */
static inline size_t eb_frame_encode(uint8_t *out, size_t cap, const eb_frame *f) {
    size_t size = eb_frame_size(f->n_channels, f->n_samples, f->sample_format);
    size_t total = (size_t)f->n_samples * f->n_channels;
    int32_t lo = f->sample_format == EB_FMT_INT16 ? -32768 : -8388608;
    int32_t hi = f->sample_format == EB_FMT_INT16 ? 32767 : 8388607;
    uint8_t *p;
    if (size == 0 || size > cap) return 0;
    out[EB_OFF_SYNC] = EB_SYNC0;
    out[EB_OFF_SYNC + 1] = EB_SYNC1;
    out[EB_OFF_VERSION] = EB_VERSION;
    out[EB_OFF_FORMAT] = f->sample_format;
    eb_put_u32(out + EB_OFF_SEQ, f->seq);
    eb_put_u64(out + EB_OFF_TIMESTAMP, f->timestamp_us);
    eb_put_f32(out + EB_OFF_RATE, f->sampling_rate);
    out[EB_OFF_NCHANNELS] = f->n_channels;
    out[EB_OFF_RESERVED] = 0;
    eb_put_u16(out + EB_OFF_NSAMPLES, f->n_samples);
    p = out + EB_HEADER_SIZE;
    for (unsigned c = 0; c < f->n_channels; c++, p += 4) eb_put_f32(p, f->scales[c]);
    for (unsigned c = 0; c < f->n_channels; c++) *p++ = f->modalities[c];
    for (size_t i = 0; i < total; i++) {
        int32_t v = f->samples[i];
        uint32_t u = (uint32_t)v;
        if (v < lo || v > hi) return 0;
        *p++ = (uint8_t)u;
        *p++ = (uint8_t)(u >> 8);
        if (f->sample_format == EB_FMT_INT24) *p++ = (uint8_t)(u >> 16);
    }
    eb_put_u32(p, eb_crc32(out, (size_t)(p - out)));
    return size;
}

#endif /* EDGE_BRIDGE_FRAME_H */
