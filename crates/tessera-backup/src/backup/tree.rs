//! The structure's nodes flattened in pre-order, each with its place in the tree: the indices
//! a backup's node records follow, the ids its leaf proofs are bound to, and the names its errors
//! give.

use crate::structure::AccessStructure;

/// A node of the structure with its place: pre-order index, children's indices, path.
pub(super) struct FlatNode<'a> {
    pub(super) node: &'a AccessStructure,
    pub(super) children: Vec<usize>,
    /// Child positions from the root (0-based).
    pub(super) path: Vec<usize>,
}

impl FlatNode<'_> {
    /// "threshold(2, a, b, c) at the root", "or(b, c) at root/2": for error messages.
    pub(super) fn describe(&self) -> String {
        format!("{} at {}", self.node, path_text(&self.path))
    }

    /// The Feldman commitments a node must have.
    pub(super) fn commitment_count(&self) -> usize {
        match self.node {
            AccessStructure::Threshold { k, .. } => k.saturating_sub(1),
            _ => 0,
        }
    }

    pub(super) fn label(&self) -> Option<&str> {
        match self.node {
            AccessStructure::Leaf(label) => Some(label),
            _ => None,
        }
    }

    /// The id a leaf proof is bound to: `<label>@<path>`, e.g. `cloud@r.2.0`.
    pub(super) fn leaf_id(&self, label: &str) -> Vec<u8> {
        let mut id = format!("{label}@r");
        for i in &self.path {
            id.push('.');
            id.push_str(&i.to_string());
        }
        id.into_bytes()
    }
}

/// Human path: "the root" or "root/2/1" (1-based child positions).
fn path_text(path: &[usize]) -> String {
    if path.is_empty() {
        return "the root".into();
    }
    let mut out = String::from("root");
    for i in path {
        out.push('/');
        out.push_str(&(i + 1).to_string());
    }
    out
}

pub(super) fn flatten(structure: &AccessStructure) -> Vec<FlatNode<'_>> {
    fn walk<'a>(node: &'a AccessStructure, path: Vec<usize>, out: &mut Vec<FlatNode<'a>>) -> usize {
        let index = out.len();
        out.push(FlatNode {
            node,
            children: Vec::new(),
            path: path.clone(),
        });
        let mut children = Vec::new();
        for (i, child) in node.children().iter().enumerate() {
            let mut child_path = path.clone();
            child_path.push(i);
            children.push(walk(child, child_path, out));
        }
        out[index].children = children;
        index
    }
    let mut out = Vec::new();
    walk(structure, Vec::new(), &mut out);
    out
}
