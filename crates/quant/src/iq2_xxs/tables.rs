//! IQ2_XXS constant tables. These are facts of the ggml IQ2_XXS format: the 256-point lattice
//! `kgrid_2bit_256` (ggml `ggml-common.h`, identical in gguf-py 0.19.0 `IQ2_XXS.grid_hex`,
//! extracted by `tools/reference/gen_iq2_tables.py`), each u16 holding eight 2-bit indices
//! into the levels 0x08, 0x19, 0x2b. The expanded grid and the sign table are derived here.

/// Grid byte values; index 3 never occurs.
pub const LEVELS: [u8; 3] = [0x08, 0x19, 0x2b];

pub const KGRID: [u16; 256] = [
    0, 2, 5, 8, 10, 17, 20, 32, 34, 40, 42, 65,
    68, 80, 88, 97, 100, 128, 130, 138, 162, 257, 260, 272,
    277, 320, 388, 408, 512, 514, 546, 642, 1025, 1028, 1040, 1057,
    1060, 1088, 1090, 1096, 1120, 1153, 1156, 1168, 1188, 1280, 1282, 1288,
    1312, 1350, 1385, 1408, 1425, 1545, 1552, 1600, 1668, 1700, 2048, 2053,
    2056, 2068, 2088, 2113, 2116, 2128, 2130, 2184, 2308, 2368, 2562, 2580,
    4097, 4100, 4112, 4129, 4160, 4192, 4228, 4240, 4245, 4352, 4360, 4384,
    4432, 4442, 4480, 4644, 4677, 5120, 5128, 5152, 5157, 5193, 5248, 5400,
    5474, 5632, 5654, 6145, 6148, 6160, 6208, 6273, 6400, 6405, 6560, 6737,
    8192, 8194, 8202, 8260, 8289, 8320, 8322, 8489, 8520, 8704, 8706, 9217,
    9220, 9232, 9280, 9302, 9472, 9537, 9572, 9872, 10248, 10272, 10388, 10820,
    16385, 16388, 16400, 16408, 16417, 16420, 16448, 16456, 16470, 16480, 16513, 16516,
    16528, 16640, 16672, 16737, 16768, 16773, 16897, 16912, 16968, 16982, 17000, 17408,
    17416, 17440, 17536, 17561, 17682, 17700, 17920, 18433, 18436, 18448, 18496, 18501,
    18688, 18776, 18785, 18818, 19013, 19088, 20480, 20488, 20497, 20505, 20512, 20608,
    20616, 20740, 20802, 20900, 21137, 21648, 21650, 21770, 22017, 22100, 22528, 22545,
    22553, 22628, 22848, 23048, 24580, 24592, 24640, 24680, 24832, 24917, 25112, 25184,
    25600, 25605, 25872, 25874, 25988, 26690, 32768, 32770, 32778, 32833, 32898, 33028,
    33048, 33088, 33297, 33793, 33796, 33808, 33813, 33856, 33888, 34048, 34118, 34196,
    34313, 34368, 34400, 34818, 35076, 35345, 36868, 36880, 36900, 36928, 37025, 37142,
    37248, 37445, 37888, 37922, 37956, 38225, 39041, 39200, 40962, 41040, 41093, 41225,
    41472, 42008, 43088, 43268,
];

const fn expand_grid() -> [u64; 256] {
    let mut out = [0u64; 256];
    let mut g = 0;
    while g < 256 {
        let mut v = 0u64;
        let mut j = 0;
        while j < 8 {
            let idx = ((KGRID[g] >> (2 * j)) & 3) as usize;
            v |= (LEVELS[idx] as u64) << (8 * j);
            j += 1;
        }
        out[g] = v;
        g += 1;
    }
    out
}

/// Byte `j` of entry `g` is the magnitude of element `j` of octet `g`.
pub const GRID: [u64; 256] = expand_grid();

const fn make_ksigns() -> [u8; 128] {
    let mut out = [0u8; 128];
    let mut s = 0;
    while s < 128 {
        out[s] = (s as u8) | (((s as u32).count_ones() as u8 & 1) << 7);
        s += 1;
    }
    out
}

/// Eight sign bits from a 7-bit index: the eighth makes the count of negatives even.
pub const KSIGNS: [u8; 128] = make_ksigns();

const fn make_sign_masks() -> [u64; 128] {
    let mut out = [0u64; 128];
    let mut s = 0;
    while s < 128 {
        let mut m = 0u64;
        let mut j = 0;
        while j < 8 {
            if KSIGNS[s] & (1 << j) != 0 {
                m |= 0xff << (8 * j);
            }
            j += 1;
        }
        out[s] = m;
        s += 1;
    }
    out
}

/// `KSIGNS[s]` widened to a byte mask: byte `j` is 0xff where element `j` is negative. Lets
/// the integer dot negate a whole octet of grid bytes with two u64 operations.
pub const SIGN_MASKS: [u64; 128] = make_sign_masks();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_matches_the_published_entries() {
        assert_eq!(GRID[0], 0x0808080808080808);
        assert_eq!(GRID[1], 0x080808080808082b);
        assert_eq!(GRID[255], 0x2b2b2b1908081908);
        assert!(KGRID.windows(2).all(|w| w[0] < w[1]));
        for g in GRID {
            for j in 0..8 {
                assert!(LEVELS.contains(&((g >> (8 * j)) as u8)));
            }
        }
    }

    #[test]
    fn ksigns_have_even_parity() {
        assert_eq!(&KSIGNS[..8], &[0x00, 0x81, 0x82, 0x03, 0x84, 0x05, 0x06, 0x87]);
        assert!(KSIGNS.iter().all(|s| s.count_ones() % 2 == 0));
    }

    #[test]
    fn sign_masks_expand_ksigns() {
        assert_eq!(SIGN_MASKS[0], 0);
        assert_eq!(SIGN_MASKS[1], 0xff00_0000_0000_00ff);
        for (s, &m) in SIGN_MASKS.iter().enumerate() {
            for j in 0..8 {
                let neg = KSIGNS[s] & (1 << j) != 0;
                assert_eq!((m >> (8 * j)) & 0xff, if neg { 0xff } else { 0 });
            }
        }
    }
}
