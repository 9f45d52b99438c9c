// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// A contract with code and no functions: every call reverts (an "empty" contract).
contract TestEmpty {}

/// A contract that answers every call with no data (a fallback that returns nothing).
contract TestSilent {
    fallback() external payable {}
}
