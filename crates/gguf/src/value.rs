//! Metadata values: the 13 GGUF value types, with arrays stored typed.

use std::fmt;

/// The type id of a metadata value, as stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type with this id, or `None` for an id the format does not define.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The id stored in the file.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The fewest bytes one value of this type occupies in the file: a string is at least its
    /// u64 length, an array at least its u32 element type and u64 count. Used to bound counts
    /// against the bytes left before allocating anything.
    pub fn min_encoded_len(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    /// Stored as one byte; the reader takes any nonzero byte as true.
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A homogeneous array. Each variant holds the elements of one value type, so an empty array
/// keeps its element type and a writer cannot produce a mixed one. Nested arrays hold inner
/// arrays, each with its own element type, as the format allows.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Value {
    /// The value's type id.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as u32 if its type is an unsigned integer of at most 32 bits. Signed types are
    /// refused even when non-negative: the conversion is by type, never by value.
    pub fn as_u32(&self) -> Option<u32> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v),
            _ => None,
        }
    }

    /// The value as u64 if its type is an unsigned integer (of any width).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            _ => self.as_u32().map(u64::from),
        }
    }

    /// The value as i64 if its type widens to i64 without loss: any signed integer, or an
    /// unsigned one of at most 32 bits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u32().map(i64::from),
        }
    }

    /// The value as f64 if it is any float or integer. 64-bit integers beyond 2^53 round.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value if it is a BOOL.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is a STRING.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value if it is an ARRAY.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The elements if this is an array of strings.
    pub fn as_str_array(&self) -> Option<Vec<&str>> {
        match self.as_array()? {
            Array::String(v) => Some(v.iter().map(String::as_str).collect()),
            _ => None,
        }
    }

    /// The elements if this is an array whose element type widens to i64 without loss (see
    /// [`Value::as_i64`]); U64 arrays are refused.
    pub fn as_i64_array(&self) -> Option<Vec<i64>> {
        self.as_array()?.to_i64_vec()
    }

    /// The elements if this is an array of any float or integer type.
    pub fn as_f64_array(&self) -> Option<Vec<f64>> {
        self.as_array()?.to_f64_vec()
    }
}

impl Array {
    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Levels of array nesting: 1 for an array of scalars or strings.
    pub fn depth(&self) -> usize {
        match self {
            Array::Array(inner) => 1 + inner.iter().map(Array::depth).max().unwrap_or(0),
            _ => 1,
        }
    }

    /// See [`Value::as_i64_array`].
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        fn widen<T: Copy + Into<i64>>(v: &[T]) -> Option<Vec<i64>> {
            Some(v.iter().map(|&x| x.into()).collect())
        }
        match self {
            Array::U8(v) => widen(v),
            Array::I8(v) => widen(v),
            Array::U16(v) => widen(v),
            Array::I16(v) => widen(v),
            Array::U32(v) => widen(v),
            Array::I32(v) => widen(v),
            Array::I64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// See [`Value::as_f64_array`].
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        match self {
            Array::F32(v) => Some(v.iter().map(|&x| x.into()).collect()),
            Array::F64(v) => Some(v.clone()),
            Array::U64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Array::I64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            _ => self
                .to_i64_vec()
                .map(|v| v.into_iter().map(|x| x as f64).collect()),
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v)
            }
        }
        impl From<Vec<$t>> for Array {
            fn from(v: Vec<$t>) -> Array {
                Array::$variant(v)
            }
        }
        impl From<Vec<$t>> for Value {
            fn from(v: Vec<$t>) -> Value {
                Value::Array(Array::$variant(v))
            }
        }
    )*};
}

from_scalar! {
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64,
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}

impl From<Vec<&str>> for Value {
    fn from(v: Vec<&str>) -> Value {
        Value::Array(Array::String(v.into_iter().map(str::to_owned).collect()))
    }
}

impl From<Array> for Value {
    fn from(v: Array) -> Value {
        Value::Array(v)
    }
}

impl From<Vec<Array>> for Value {
    fn from(v: Vec<Array>) -> Value {
        Value::Array(Array::Array(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_type_ids_round_trip() {
        for id in 0..13 {
            assert_eq!(ValueType::from_id(id).unwrap().id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
        assert_eq!(ValueType::from_id(u32::MAX), None);
    }

    #[test]
    fn integer_accessors_widen_by_type_only() {
        assert_eq!(Value::U8(7).as_u32(), Some(7));
        assert_eq!(Value::U16(65535).as_u32(), Some(65535));
        assert_eq!(Value::U32(u32::MAX).as_u32(), Some(u32::MAX));
        assert_eq!(Value::U64(5).as_u32(), None);
        assert_eq!(Value::I32(5).as_u32(), None);
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::U32(9).as_u64(), Some(9));
        assert_eq!(Value::I64(9).as_u64(), None);
        assert_eq!(Value::I8(-3).as_i64(), Some(-3));
        assert_eq!(Value::U32(u32::MAX).as_i64(), Some(u32::MAX as i64));
        assert_eq!(Value::U64(1).as_i64(), None);
        assert_eq!(Value::F32(1.0).as_u32(), None);
        assert_eq!(Value::Bool(true).as_u32(), None);
    }

    #[test]
    fn float_accessor_takes_every_number() {
        assert_eq!(Value::F32(1e-6).as_f64(), Some(1e-6f32 as f64));
        assert_eq!(Value::F64(0.1).as_f64(), Some(0.1));
        assert_eq!(Value::U32(10000).as_f64(), Some(10000.0));
        assert_eq!(Value::I16(-2).as_f64(), Some(-2.0));
        assert_eq!(Value::U64(1 << 60).as_f64(), Some((1u64 << 60) as f64));
        assert_eq!(Value::Bool(true).as_f64(), None);
        assert_eq!(Value::String("1".into()).as_f64(), None);
    }

    #[test]
    fn other_accessors() {
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
        assert_eq!(Value::U8(1).as_bool(), None);
        assert_eq!(Value::from("x").as_str(), Some("x"));
        assert_eq!(Value::U8(1).as_str(), None);
        let toks = Value::from(vec!["a", "bc"]);
        assert_eq!(toks.as_str_array(), Some(vec!["a", "bc"]));
        assert_eq!(toks.as_i64_array(), None);
        assert_eq!(
            Value::from(vec![0u32, 4, 128]).as_i64_array(),
            Some(vec![0, 4, 128])
        );
        assert_eq!(
            Value::from(vec![-1i32, 2]).as_i64_array(),
            Some(vec![-1, 2])
        );
        assert_eq!(Value::from(vec![1u64]).as_i64_array(), None);
        assert_eq!(
            Value::from(vec![10.0f32, 0.5]).as_f64_array(),
            Some(vec![10.0, 0.5])
        );
        assert_eq!(Value::from(vec![3u16]).as_f64_array(), Some(vec![3.0]));
        assert_eq!(Value::from(vec![true]).as_f64_array(), None);
        assert_eq!(Value::U32(1).as_str_array(), None);
    }

    #[test]
    fn array_shape() {
        let nested = Array::Array(vec![
            Array::Array(vec![Array::U8(vec![1])]),
            Array::I32(vec![]),
        ]);
        assert_eq!(nested.depth(), 3);
        assert_eq!(nested.len(), 2);
        assert_eq!(nested.elem_type(), ValueType::Array);
        assert!(Array::F64(vec![]).is_empty());
        assert_eq!(Array::Array(vec![]).depth(), 1);
    }
}
