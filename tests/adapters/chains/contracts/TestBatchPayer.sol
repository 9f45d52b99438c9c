// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// Pays several recipients in one transaction (as exchanges and multisigs batch payouts): one
/// ERC-20 `Transfer` log per payment. The sender approves this contract first. Tests only.
contract TestBatchPayer {
    function pay(IERC20 token, address[] calldata to, uint256[] calldata amounts) external {
        require(to.length == amounts.length, "lengths differ");
        for (uint256 i = 0; i < to.length; i++) {
            require(token.transferFrom(msg.sender, to[i], amounts[i]), "transfer failed");
        }
    }
}
