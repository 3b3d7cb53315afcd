"""Prints the IQ2_XXS lattice (`kgrid_2bit_256`) as a Rust array, from gguf-py 0.19.0.

gguf-py stores the table hex-packed, one little-endian u16 per entry; each 2-bit field is an
index into the grid levels (0x08, 0x19, 0x2b). The output is pasted into
crates/quant/src/iq2_xxs/tables.rs; its checksums are asserted there.
"""
import struct
from gguf.quants import IQ2_XXS

raw = bytes.fromhex(IQ2_XXS.grid_hex.decode())
vals = struct.unpack("<256H", raw)
print("pub const KGRID: [u16; 256] = [")
for i in range(0, 256, 12):
    print("    " + ", ".join(str(v) for v in vals[i:i + 12]) + ",")
print("];")
