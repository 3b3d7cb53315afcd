//! The IQ2_XXS tables match the checksums of FORMATS §2.5.

use dsv4_quant::iq2_xxs::tables::{GRID, KGRID, KSIGNS};
use sha2::{Digest, Sha256};

fn hex(bytes: impl IntoIterator<Item = u8>) -> String {
    let digest = Sha256::digest(bytes.into_iter().collect::<Vec<u8>>());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn grid_as_le_u64_has_the_published_sha256() {
    assert_eq!(
        hex(GRID.iter().flat_map(|g| g.to_le_bytes())),
        "05826b5d3e472a3a78f196be62ac78acf81df0f909626e12ab9fa2a5d490dd54"
    );
}

#[test]
fn kgrid_as_le_u16_has_the_published_sha256() {
    assert_eq!(
        hex(KGRID.iter().flat_map(|g| g.to_le_bytes())),
        "915952ebc4af8ddba8113583ca1316fc818843f7b825bbf1a25ae1c39bf0e16d"
    );
}

#[test]
fn ksigns_have_the_published_sha256() {
    assert_eq!(hex(KSIGNS), "a76742a603f8beca5212ecce0f1f02f11a4887fd2f7c8b15aca0ea3eb3380c31");
}
